-- ws.json through the real core (the server's own module and lua-cjson, in
-- the script's lua_State), driven by spec/fixtures/eval.lua.
local helpers = require "helpers"

describe("ws.json", function()
  local srv, c

  before_each(function()
    srv, c = helpers.eval_server()
  end)

  after_each(function()
    srv:close()
  end)

  local function eval(code)
    return helpers.eval(c, code)
  end

  -- Runs `return EXPR` without a tail call, so that an error names the line.
  local function value(expr)
    return eval("local v = " .. expr .. " return v")
  end

  describe("encode", function()
    it("writes objects, arrays, strings, numbers, booleans and null", function()
      assert.equals('ok {"a":[1,2.5,"x",true,false,null]}',
        eval('return ws.json.encode({ a = { 1, 2.5, "x", true, false, ws.json.null } })'))
      assert.equals('ok "\\"quoted\\"\\n\\u0000"', eval([[return ws.json.encode('"quoted"\n\0')]]))
      assert.equals('ok 42', eval('return ws.json.encode(42)'))
    end)

    it("writes an empty table as an object, {}", function()
      assert.equals("ok {}", eval("return ws.json.encode({})"))
      assert.equals('ok {"list":{}}', eval("return ws.json.encode({ list = {} })"))
    end)

    it("fills a few holes in an array with null and refuses a mostly empty one", function()
      assert.equals("ok [1,null,3]", eval("return ws.json.encode({ 1, nil, 3 })"))
      local r = value("ws.json.encode({ [1] = 1, [100] = 2 })")
      assert.equals("error eval:1: json.encode: Cannot serialise table: excessively sparse array", r)
    end)

    it("writes UTF-8 text as it is", function()
      assert.equals('ok "héllo 😀"', eval('return ws.json.encode("héllo 😀")'))
    end)

    it("raises, naming the string, for text that is not valid UTF-8", function()
      local r = value([[ws.json.encode({ user = { name = "ad\255a" } })]])
      assert.equals("error eval:1: json.encode: the string at value.user.name is not valid "
        .. "UTF-8 (send bytes as binary, or encode them as text, e.g. base64)", r)
      r = value([[ws.json.encode({ list = { "ok", "\237\160\128" } })]])
      assert.matches("^error eval:1: json.encode: the string at value.list%[2%] is not valid UTF%-8", r)
      r = value([[ws.json.encode({ ["k\192\128"] = 1 })]])
      assert.matches("^error eval:1: json.encode: a key of value is not valid UTF%-8", r)
      r = value([[ws.json.encode("\255")]])
      assert.matches("^error eval:1: json.encode: the string at value is not valid UTF%-8", r)
    end)

    it("refuses NaN, infinities, functions and a table that contains itself", function()
      for _, v in ipairs { "0/0", "math.huge", "-math.huge", "{ x = 1/0 }" } do
        assert.equals("error eval:1: json.encode: Cannot serialise number: must not be NaN or Inf",
          value("ws.json.encode(" .. v .. ")"), v)
      end
      assert.equals("error eval:1: json.encode: Cannot serialise function: type not supported",
        value("ws.json.encode({ f = print })"))
      assert.equals("error eval:1: json.encode: Cannot serialise, excessive nesting (1001)",
        eval("local t = {} t.t = t local s = ws.json.encode(t) return s"))
    end)

    it("keeps 14 significant digits of a number", function()
      assert.equals("ok 99999999999999 0.1 -3", eval(
        "return ws.json.encode(99999999999999), ws.json.encode(0.1), ws.json.encode(-3)"))
      assert.equals("ok 1.2345678901234e+14", eval("return ws.json.encode(123456789012345)"))
    end)

    it("writes a table with string keys as an object, numeric keys as strings", function()
      local r = eval([[
        local s = ws.json.encode({ "a", k = "v" })
        return #s, s:find('"1":"a"', 1, true) ~= nil, s:find('"k":"v"', 1, true) ~= nil]])
      assert.equals("ok 17 true true", r)
    end)
  end)

  describe("decode", function()
    it("reads what encode writes", function()
      assert.equals("ok 1 x true 2", eval(
        'local v = ws.json.decode(\'{"a":[1,"x",true],"b":{"c":2}}\') return v.a[1], v.a[2], v.a[3], v.b.c'))
      assert.equals("ok é😀", eval([[return ws.json.decode('"\\u00e9\\ud83d\\ude00"')]]))
    end)

    it("gives json.null for null, and [] as an empty table", function()
      assert.equals("ok true true 0", eval(
        'local v = ws.json.decode(\'{"a":null,"b":[]}\') return v.a == ws.json.null, type(v.b) == "table", #v.b'))
      assert.equals("ok true", eval('return ws.json.decode("null") == ws.json.null'))
    end)

    it("returns nil and a message for text that is not JSON, and never raises", function()
      local bad = {
        [""] = "Expected value but found T_END at character 1",
        ["{"] = "Expected object key string but found T_END at character 2",
        ["[1,2] x"] = "Expected the end but found invalid token at character 7",
        ["{'a':1}"] = "Expected object key string but found invalid token at character 2",
        ["NaN"] = "Expected value but found invalid token at character 1",
        ["Infinity"] = "Expected value but found invalid token at character 1",
        ["[-Infinity]"] = "Expected value but found invalid number at character 2",
        ["0x10"] = "Expected value but found invalid number at character 1",
      }
      for text, why in pairs(bad) do
        local r = eval(string.format("return ws.json.decode(%q)", text))
        assert.equals("ok nil json.decode: " .. why, r, text)
      end
    end)

    it("refuses a lone surrogate escape", function()
      assert.equals("ok nil json.decode: Expected value but found invalid unicode escape code at character 2",
        eval([[return ws.json.decode('"\\ud800"')]]))
    end)

    it("refuses text that is not UTF-8", function()
      assert.equals("ok nil json.decode: the text is not valid UTF-8",
        eval([[return ws.json.decode('"\255"')]]))
      assert.equals("ok nil json.decode: the text is not valid UTF-8",
        eval([[return ws.json.decode('{"a":"\192\128"}')]]))
    end)

    it("refuses numbers too large for a double, with or without an exponent", function()
      for _, text in ipairs { "1e999", "[1, -1E400]", '{"a":{"b":[2e+308]}}',
                              string.rep("9", 400) } do
        assert.equals("ok nil json.decode: a number is too large for a double",
          eval(string.format("return ws.json.decode(%q)", text)), text)
      end
      -- Numbers are doubles: large integers come back rounded.
      assert.equals("ok 1e+300 0 12345678901234567168", eval(
        "return ws.json.decode('1e300'), ws.json.decode('1e-999'), "
        .. "string.format('%.0f', ws.json.decode('12345678901234567890'))"))
    end)

    it("stops at 1000 levels of nesting, however deep the text goes", function()
      assert.equals("ok nil json.decode: Found too many nested data structures (1001) at character 1001",
        eval('return ws.json.decode(string.rep("[", 100000))'))
      assert.equals("ok 1000", eval([[
        local v = ws.json.decode(string.rep("[", 999) .. "1" .. string.rep("]", 999))
        local n = 1
        while type(v) == "table" do v, n = v[1], n + 1 end
        return n]]))
    end)

    it("raises for an argument that is not a string (a mistake, not bad input)", function()
      assert.equals("error eval:1: bad argument #1 to 'decode' (string expected, got nil)",
        value("ws.json.decode(nil)"))
      assert.equals("error eval:1: bad argument #1 to 'decode' (string expected, got table)",
        value("ws.json.decode({})"))
    end)
  end)

  it("is a private cjson instance: a script's own cjson settings do not leak in", function()
    assert.equals("ok nil", eval([[
      local cjson = require "cjson"
      cjson.decode_invalid_numbers(true)
      local ok = pcall(cjson.decode, "NaN")
      assert(ok)
      return (ws.json.decode("NaN"))]]))
  end)
end)

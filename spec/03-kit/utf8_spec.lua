-- Clean text at the Lua boundary, through the real core: text a script sends
-- (conn:send, ws.send, ws.broadcast, ws.broadcast_except), close reasons and
-- room names must be valid UTF-8, or the call raises naming the argument.
-- Driven by spec/fixtures/eval.lua.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local NOT_TEXT = "(text is not valid UTF-8; send bytes as binary)"

describe("clean text at the Lua boundary", function()
  local srv, c, other

  before_each(function()
    srv, c = helpers.eval_server()
    other = srv:connect("/?room=r")
  end)

  after_each(function()
    srv:close()
  end)

  local function eval(code)
    return helpers.eval(c, code)
  end

  -- Runs `return EXPR` without a tail call, so that errors name the function.
  local function value(expr)
    return eval("local v, e = " .. expr .. " return v, e")
  end

  -- Invalid: a stray continuation byte, an overlong NUL, a surrogate, a
  -- truncated sequence, a byte that never appears in UTF-8.
  local invalid = { [[\128]], [[\192\128]], [[\237\160\128]], [[ab\226\130]], [[\255]] }

  it("conn:send and ws.send refuse invalid text and send it as binary", function()
    for _, bytes in ipairs(invalid) do
      assert.equals("error eval:1: bad argument #1 to 'send' " .. NOT_TEXT,
        value('conn:send("' .. bytes .. '")'), bytes)
      assert.equals("error eval:1: bad argument #2 to 'send' " .. NOT_TEXT,
        value('ws.send(conn, "' .. bytes .. '")'), bytes)
    end
    c:send([[local ok = conn:send("\255\0", true) return ok]])
    assert.same({ { data = "\255\0", binary = true }, { data = "ok true", binary = false } },
      c:received())
    assert.same({}, other:received())
  end)

  it("broadcasts refuse invalid text, deliver nothing, and relay binary unchecked", function()
    for _, bytes in ipairs(invalid) do
      assert.equals("error eval:1: bad argument #2 to 'broadcast' " .. NOT_TEXT,
        value('ws.broadcast("r", "' .. bytes .. '")'), bytes)
      assert.equals("error eval:1: bad argument #2 to 'broadcast_except' " .. NOT_TEXT,
        value('ws.broadcast_except("r", "' .. bytes .. '", conn)'), bytes)
    end
    assert.same({}, other:received())
    assert.equals("ok 1", eval([[return ws.broadcast("r", "\255", true)]]))
    assert.same({ { data = "\255", binary = true } }, other:received())
    assert.equals("ok 1", eval([[return ws.broadcast_except("r", "\192\128", conn, true)]]))
    assert.same({ { data = "\192\128", binary = true } }, other:received())
  end)

  it("passes valid text through unchanged, whatever its script", function()
    assert.equals("ok 1", eval([[return ws.broadcast("r", "héllo 😀 ∑ \0 end")]]))
    assert.same({ { data = "héllo 😀 ∑ \0 end", binary = false } }, other:received())
  end)

  it("refuses a close reason that is not UTF-8, and the connection stays open", function()
    assert.equals("error eval:1: bad argument #2 to 'close' (close reason is not valid UTF-8)",
      value([[conn:close(4000, "bye \255")]]))
    assert.equals("error eval:1: bad argument #3 to 'close' (close reason is not valid UTF-8)",
      value([[ws.close(conn, 4000, "\192\175")]]))
    assert.equals("open", c.state)
    eval([[return conn:close(4000, "bye é")]])
    assert.equals(4000, c.close_code)
    assert.equals("bye é", c.close_reason)
  end)

  it("refuses room names that are not UTF-8 everywhere a room is named", function()
    local calls = {
      { "ws.join(conn, %s)", 2, "join" },
      { "ws.leave(conn, %s)", 2, "leave" },
      { "conn:join(%s)", 1, "join" },
      { "ws.broadcast(%s, 'x')", 1, "broadcast" },
      { "ws.broadcast(%s, 'x', true)", 1, "broadcast" },
      { "ws.broadcast_except(%s, 'x', conn)", 1, "broadcast_except" },
      { "ws.members(%s)", 1, "members" },
      { "ws.count(%s)", 1, "count" },
      { "ws.room_state(%s)", 1, "room_state" },
    }
    for _, call in ipairs(calls) do
      local code = call[1]:format([["r\255"]])
      assert.equals(("error eval:1: bad argument #%d to '%s' (room name is not valid UTF-8)")
        :format(call[2], call[3]), value(code), code)
    end
    assert.same({ "r" }, srv:room_names())
    assert.equals("ok true", eval([[return ws.join(conn, "salle à manger")]]))
  end)

  it("counts every refusal in lua_invalid_utf8", function()
    assert.equals(0, srv:stats().lua_invalid_utf8)
    eval([[return conn:send("\255")]])
    eval([[return ws.broadcast("r", "\255")]])
    eval([[return ws.join(conn, "\255")]])
    eval([[return conn:close(1000, "\255")]])
    eval([[return conn:send("\255", true)]])
    assert.equals(4, srv:stats().lua_invalid_utf8)
  end)

  it("closes the connection with 1011 when the handler does not catch the error", function()
    local bare = testing.server(helpers.temp_script([[
      local ws = require "moonroom"
      return {
        on_connect = function(conn) ws.join(conn, "r") end,
        on_message = function(conn, msg) ws.broadcast("r", msg .. "\255") end,
      }]]))
    local a, b = bare:connect("/"), bare:connect("/")
    helpers.with_logs(function() a:send("hi") end)
    assert.equals(1011, a.close_code)
    assert.equals("open", b.state)
    assert.same({}, b:received())
    assert.equals(1, bare:stats().handler_errors)
    assert.equals(1, bare:stats().lua_invalid_utf8)
    bare:close()
  end)

  it("ws.utf8_valid answers with the core's rules", function()
    assert.equals("ok true true true", eval([[return ws.utf8_valid(""), ws.utf8_valid("abc"),
      ws.utf8_valid("\240\159\152\128")]]))
    assert.equals("ok false false false false", eval([[return ws.utf8_valid("\255"),
      ws.utf8_valid("\192\128"), ws.utf8_valid("\237\160\128"), ws.utf8_valid("\244\144\128\128")]]))
    assert.equals("error eval:1: bad argument #1 to 'utf8_valid' (string expected, got nil)",
      value([[ws.utf8_valid(nil)]]))
  end)
end)

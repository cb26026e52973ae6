-- The kit: on_http through the real connection path (srv:request), what the
-- script is told about a request, and the results on_http may not return.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local HTTP = helpers.fixture("http")

describe("moonroom.testing: on_http", function()
  local srv

  before_each(function()
    srv = testing.server(HTTP)
  end)

  after_each(function()
    srv:close()
  end)

  local function lines(body)
    local t = {}
    for line in (body .. "\n"):gmatch("([^\n]*)\n") do
      local k, v = line:match("^(%S+) ?(.*)$")
      t[k] = v
    end
    return t
  end

  describe("req", function()
    it("has the method, path, query, headers, remote address and body", function()
      local status, body = srv:request("POST", "/echo?a=1&b=two", {
        headers = { ["X-Test"] = "yes" }, body = "payload", remote_addr = "192.0.2.7" })
      assert.equals(200, status)
      assert.same({
        method = "POST", path = "/echo", query_string = "a=1&b=two", ["query.a"] = "1",
        remote = "192.0.2.7", body = "payload",
        headers = "connection,content-length,host,x-test", ["x-test"] = "yes",
        protocols = "nil",
      }, lines(body))
    end)

    it("has an empty body and query string when there are none", function()
      local t = lines(select(2, srv:request("GET", "/echo")))
      assert.equals("GET", t.method)
      assert.equals("", t.body)
      assert.equals("", t.query_string)
      assert.equals("nil", t["query.a"])
    end)

    for _, method in ipairs { "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" } do
      it("passes " .. method .. " through", function()
        assert.equals(method, lines(select(2, srv:request(method, "/echo"))).method)
      end)
    end

    it("decodes a chunked body", function()
      local _, body = srv:request("POST", "/echo", {
        headers = { ["Transfer-Encoding"] = "chunked" },
        body = "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n" })
      assert.equals("abcdefg", lines(body).body)
    end)
  end)

  describe("the answer", function()
    it("is status, body and headers, with text/plain by default", function()
      local status, body, headers = srv:request("GET", "/nowhere")
      assert.equals(404, status)
      assert.equals("no /nowhere", body)
      assert.equals("text/plain; charset=utf-8", headers["content-type"])
      assert.equals("11", headers["content-length"])
      assert.equals("close", headers.connection)
    end)

    it("may set Content-Type, and repeat a header from a list", function()
      local status, body, headers = srv:request("GET", "/result?case=typed")
      assert.equals(201, status)
      assert.equals("{}", body)
      assert.equals("application/json", headers["content-type"])
      status, body, headers = srv:request("GET", "/result?case=listed")
      assert.equals(200, status)
      assert.equals("a=1, b=2", headers["set-cookie"])
      assert.equals("1", headers["x-one"])
    end)

    it("has no Content-Length for 204", function()
      local status, body, headers = srv:request("GET", "/result?case=ok_204")
      assert.equals(204, status)
      assert.equals("", body)
      assert.is_nil(headers["content-length"])
    end)

    it("to HEAD has the GET answer's headers and no body", function()
      local status, body, headers = srv:request("HEAD", "/nowhere")
      assert.equals(404, status)
      assert.equals("", body)
      assert.equals("11", headers["content-length"])
    end)

    it("can publish: ws.broadcast from on_http reaches the room's members", function()
      local a = srv:connect("/?room=news")
      local b = srv:connect("/?room=news")
      local status, body = srv:request("POST", "/broadcast/news", { body = "hello" })
      assert.equals(200, status)
      assert.equals("2", body)
      assert.same({ "hello" }, a:messages())
      assert.same({ "hello" }, b:messages())
    end)
  end)

  describe("a wrong result", function()
    -- What each one is logged as is checked in tests/unit/test_bridge.c.
    for _, case in ipairs {
      "nothing", "string_status", "status_101", "status_199", "status_600",
      "fraction", "no_body", "table_body", "body_204", "bad_header",
      "own_header", "hop_header", "raise",
    } do
      it("(" .. case .. ") is a handler error: 500, counted", function()
        local status, body
        local before = srv:stats()
        helpers.with_logs(function()
          status, body = srv:request("GET", "/result?case=" .. case)
        end)
        assert.equals(500, status)
        assert.equals("internal error\n", body)
        local after = srv:stats()
        assert.equals(before.handler_errors + 1, after.handler_errors)
        assert.equals(before.http_errors + 1, after.http_errors)
        assert.equals(before.http_requests + 1, after.http_requests)
      end)
    end
  end)

  describe("refusals of the server's own", function()
    it("413 for a Content-Length over --max-body, counted, without calling on_http", function()
      srv:close()
      srv = testing.server(HTTP, { max_body = 4 })
      local status, body
      helpers.with_logs(function()
        status, body = srv:request("POST", "/echo", { body = "12345" })
      end)
      assert.equals(413, status)
      assert.equals("Content-Length larger than --max-body\n", body)
      assert.equals(1, srv:stats().http_refused)
      assert.equals(0, srv:stats().http_requests)
      assert.equals(200, (srv:request("POST", "/echo", { body = "1234" })))
    end)

    it("413 for a chunked body that grows past --max-body", function()
      srv:close()
      srv = testing.server(HTTP, { max_body = 4 })
      local status
      helpers.with_logs(function()
        status = srv:request("POST", "/echo", {
          headers = { ["Transfer-Encoding"] = "chunked" }, body = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" })
      end)
      assert.equals(413, status)
    end)

    it("417 for an Expect other than 100-continue", function()
      local status
      helpers.with_logs(function()
        status = srv:request("POST", "/echo", { headers = { Expect = "teapot" }, body = "x" })
      end)
      assert.equals(417, status)
    end)
  end)
end)

describe("moonroom.testing: a script without on_http", function()
  it("answers plain requests with 404 as before", function()
    local srv = testing.server(helpers.fixture("recorder"))
    local status, body, headers = srv:request("GET", "/anything")
    assert.equals(404, status)
    assert.equals("not found\n", body)
    assert.equals("close", headers.connection)
    assert.equals(0, srv:stats().http_requests)
    srv:close()
  end)
end)

describe("moonroom.testing: on_http across a reload", function()
  it("is answered once a reload adds it, and 404 again once one drops it", function()
    local path = helpers.temp_script("return { on_connect = function() end }\n")
    local srv = testing.server(path)
    assert.equals(404, (srv:request("GET", "/x")))
    helpers.write_file(path, 'return { on_http = function(req) return 200, "v2 " .. req.path end }\n')
    assert.is_true(srv:reload())
    assert.same({ 200, "v2 /x" }, { (srv:request("GET", "/x")), (select(2, srv:request("GET", "/x"))) })
    helpers.with_logs(function()
      helpers.write_file(path, "return { on_connect = function() end }\n")
      assert.is_true(srv:reload())
    end)
    local status, body = srv:request("GET", "/x")
    assert.equals(404, status)
    assert.equals("not found\n", body)
    srv:close()
    os.remove(path)
  end)
end)

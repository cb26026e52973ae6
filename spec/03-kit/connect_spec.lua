-- The kit: loading scripts, connecting, refusals.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local RECORDER = helpers.fixture("recorder")

describe("moonroom.testing: servers", function()
  it("loads a script and reports its version", function()
    local srv = testing.server(RECORDER)
    assert.matches("^version 1 sha256:%x+$", srv:version())
    assert.equals(0, srv:stats().connections_open)
    srv:close()
    assert.is_true(srv.closed)
  end)

  it("reports a script that does not load with its file and line", function()
    local path = helpers.temp_script("return {\n  on_message = function( end\n}\n")
    local srv, err = testing.try_server(path)
    os.remove(path)
    assert.is_nil(srv)
    assert.matches(path:gsub("%p", "%%%0") .. ":2:", err)
    assert.has_error(function() testing.server("spec/fixtures/does-not-exist.lua") end)
  end)

  it("refuses a script that does not return handlers", function()
    local path = helpers.temp_script("return 42\n")
    local srv, err = testing.try_server(path)
    os.remove(path)
    assert.is_nil(srv)
    assert.matches("must return a table of handlers", err)
  end)

  it("takes the server's limits, checked by the server's own parser", function()
    local srv = testing.server(RECORDER, { max_message = 10, max_backpressure = 2048 })
    srv:close()
    local none, err = testing.try_server(RECORDER, { max_backpressure = 10 })
    assert.is_nil(none)
    assert.matches("%-%-max%-backpressure", err)
    assert.has_error(function() testing.server(RECORDER, { idle_timeout = 5 }) end)
  end)

  it("runs servers side by side, each with its own rooms and ids", function()
    local a = testing.server(RECORDER)
    local b = testing.server(RECORDER)
    local a1 = a:connect("/?room=r")
    local b1 = b:connect("/?room=r")
    assert.equals(1, a1.id)
    assert.equals(1, b1.id)
    a:connect("/?room=r")
    assert.equals(2, a:count("r"))
    assert.equals(1, b:count("r"))
    a:close()
    assert.equals("open", b1.state)
    b:close()
  end)

  it("raises on use after close", function()
    local srv = testing.server(RECORDER)
    srv:close()
    assert.has_error(function() srv:connect("/") end, "moonroom.testing: the server is closed")
    srv:close() -- closing twice is harmless
  end)
end)

describe("moonroom.testing: connect", function()
  local srv, log

  before_each(function()
    srv = testing.server(RECORDER)
    log = helpers.observer(srv)
  end)

  after_each(function()
    srv:close()
  end)

  it("opens a connection through the real handshake and on_connect", function()
    local c = srv:connect("/room/path?x=1&y=two")
    assert.equals("open", c.state)
    assert.is_false(c.closed)
    assert.equals(2, c.id)
    assert.equals(101, c.response.status)
    assert.equals("websocket", c.response.headers.upgrade)
    assert.same({ "connect 2 /room/path?x=1&y=two" }, log:messages())
    assert.equals(2, srv:stats().connections_open)
  end)

  it("passes path, decoded query, headers and remote address to on_connect", function()
    local c = srv:connect("/?header=x-token&remote=1", {
      headers = { ["X-Token"] = "secret" },
      remote_addr = "203.0.113.7",
    })
    assert.same({ "secret", "203.0.113.7" }, c:messages())
    local d = srv:connect("/?header=host")
    assert.same({ "localhost" }, d:messages())
  end)

  it("joins repeated headers with a comma", function()
    local c = srv:connect("/?header=x-a", { headers = { { "X-A", "1" }, { "X-A", "2" } } })
    assert.same({ "1, 2" }, c:messages())
  end)

  it("delivers what on_connect sends after the 101, in order", function()
    local c = srv:connect("/?greet=1&header=upgrade")
    assert.same({ "hello 2", "websocket" }, c:messages())
  end)

  it("returns the script's refusal: status and body", function()
    local c, status, body, res = srv:try_connect("/?refuse=429&body=slow%20down")
    assert.is_nil(c)
    assert.equals(429, status)
    assert.equals("slow down", body)
    assert.equals("close", res.headers.connection)
    assert.is_nil(res.headers["sec-websocket-accept"])
    assert.equals(1, srv:stats().handler_refusals)
  end)

  it("refuses with 403 forbidden by default", function()
    local _, status, body = srv:try_connect("/?refuse=x")
    assert.equals(403, status)
    assert.equals("forbidden", body)
  end)

  it("raises from connect when refused", function()
    assert.has_error(function() srv:connect("/?refuse=400&body=no") end,
      "moonroom.testing: connecting to /?refuse=400&body=no was refused: 400 no")
  end)

  it("answers an error in on_connect with 500, and serves the next one", function()
    helpers.with_logs(function()
      local _, status, body = srv:try_connect("/?crash=1")
      assert.equals(500, status)
      assert.equals("internal error", body)
    end)
    assert.equals(1, srv:stats().handler_errors)
    assert.equals("open", srv:connect("/").state)
  end)

  it("runs no on_close for a refused connection", function()
    srv:try_connect("/?refuse=403")
    helpers.with_logs(function() srv:try_connect("/?crash=1") end)
    assert.same({ "connect 2 /?refuse=403", "connect 3 /?crash=1" }, log:messages())
    assert.equals(1, srv:stats().connections_open)
  end)

  describe("HTTP-level refusals", function()
    it("426 for a wrong Sec-WebSocket-Version", function()
      local _, status, _, res = srv:try_connect("/", { headers = { ["Sec-WebSocket-Version"] = "8" } })
      assert.equals(426, status)
      assert.equals("13", res.headers["sec-websocket-version"])
      assert.equals(1, srv:stats().handshakes_refused)
    end)

    it("400 without a key", function()
      local _, status = srv:try_connect("/", { headers = { ["Sec-WebSocket-Key"] = false } })
      assert.equals(400, status)
    end)

    it("405 for an upgrade with another method", function()
      local _, status, _, res = srv:try_connect("/", { method = "POST" })
      assert.equals(405, status)
      assert.equals("GET", res.headers.allow)
    end)

    it("404 for a plain HTTP request", function()
      local _, status = srv:try_connect("/", { headers = {
        Upgrade = false, Connection = false,
        ["Sec-WebSocket-Key"] = false, ["Sec-WebSocket-Version"] = false } })
      assert.equals(404, status)
    end)

    it("431 for a head over max_head", function()
      local small = testing.server(RECORDER, { max_head = 256 })
      local _, status = small:try_connect("/", { headers = { ["X-Big"] = string.rep("x", 300) } })
      assert.equals(431, status)
      small:close()
    end)

    it("none of them reaches on_connect", function()
      srv:try_connect("/", { method = "PUT" })
      assert.same({}, log:messages())
    end)
  end)

  describe("raw connections", function()
    it("can be driven byte by byte", function()
      local c = srv:open()
      assert.equals("connecting", c.state)
      local req = "GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" ..
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" ..
        "Sec-WebSocket-Version: 13\r\n\r\n"
      for i = 1, #req - 1 do
        c:feed(req:sub(i, i))
      end
      assert.equals("connecting", c.state)
      -- The last byte of the head and a first frame arrive together.
      c:feed(req:sub(-1) .. testing.sim.encode(1, "early"))
      assert.equals("open", c.state)
      assert.equals("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", c.response.headers["sec-websocket-accept"])
      assert.same({ "early" }, c:messages())
      assert.same({ "connect 2 /raw?", "message 2 text early" }, log:messages())
    end)

    it("gets 400 for garbage", function()
      local c = srv:open()
      c:feed("HELLO\r\n\r\n")
      assert.equals("closed", c.state)
      assert.equals(400, c.response.status)
    end)
  end)
end)

describe("moonroom.testing: closing in on_connect", function()
  it("refuses the upgrade with 403 and counts a handler refusal", function()
    local path = helpers.temp_script([[
return {
  on_connect = function(conn) conn:close(4000, "not today") end,
  on_close = function() error("on_close must not run for a refused upgrade") end,
}
]])
    local srv = testing.server(path)
    local conn, status = srv:try_connect("/")
    assert.is_nil(conn)
    assert.equals(403, status)
    assert.equals(1, srv:stats().handler_refusals)
    assert.equals(0, srv:stats().handler_errors)
    srv:close()
    os.remove(path)
  end)
end)

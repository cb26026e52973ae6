-- The kit: subprotocols and response headers chosen by on_connect, and the
-- results on_connect may not return.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local HANDSHAKE = helpers.fixture("handshake")

describe("moonroom.testing: handshake control", function()
  local srv

  before_each(function()
    srv = testing.server(HANDSHAKE)
  end)

  after_each(function()
    srv:close()
  end)

  -- A wrong result is a handler error: 500 "internal error", counted.
  local function handler_error(target, opts)
    local conn, status, body
    helpers.with_logs(function()
      conn, status, body = srv:try_connect(target, opts)
    end)
    assert.is_nil(conn)
    assert.equals(500, status)
    assert.equals("internal error", body)
    return srv:stats().handler_errors
  end

  describe("req.protocols", function()
    it("lists the offered subprotocols in order", function()
      local c = srv:connect("/list", { protocols = { "graphql-ws", "chat" } })
      assert.same({ "protocols graphql-ws,chat" }, c:messages())
      assert.is_nil(c.protocol)
    end)

    it("is empty when none is offered", function()
      assert.same({ "protocols " }, srv:connect("/list"):messages())
      assert.same({ "protocols " }, srv:connect("/list", { protocols = {} }):messages())
    end)

    it("joins repeated headers and skips empty elements", function()
      local c = srv:connect("/list", { headers = {
        { "Sec-WebSocket-Protocol", " a ,, b" },
        { "X-Other", "x" },
        { "sec-websocket-protocol", "c" },
      } })
      assert.same({ "protocols a,b,c" }, c:messages())
    end)
  end)

  describe("accepting", function()
    it("still accepts with nothing or true, selecting no protocol", function()
      for _, target in ipairs({ "/nothing", "/true" }) do
        local c = srv:connect(target, { protocols = { "chat" } })
        assert.equals("open", c.state)
        assert.is_nil(c.protocol)
        assert.is_nil(c.response.headers["sec-websocket-protocol"])
      end
    end)

    it("selects one of the offered protocols", function()
      local c = srv:connect("/select?p=superchat", { protocols = { "chat", "superchat" } })
      assert.equals("superchat", c.protocol)
      assert.equals("superchat", c.response.headers["sec-websocket-protocol"])
      c:send("hi")
      assert.equals("hi", c:next())
    end)

    it("adds headers to the 101, a list repeating one, and sends frames after it", function()
      local c = srv:connect("/first", { protocols = { "graphql-ws" } })
      assert.equals("graphql-ws", c.protocol)
      assert.equals("kit", c.response.headers["x-server"])
      assert.equals("a=1, b=2", c.response.headers["set-cookie"])
      assert.same({ "hello" }, c:messages())
    end)

    it("takes an empty options table and a nil protocol", function()
      local c = srv:connect("/first")
      assert.is_nil(c.protocol)
      assert.equals("kit", c.response.headers["x-server"])
    end)
  end)

  describe("refusing", function()
    it("adds headers to the refusal and drops what on_connect sent", function()
      local c, status, body, res = srv:try_connect("/refuse")
      assert.is_nil(c)
      assert.equals(401, status)
      assert.equals("token required", body)
      assert.equals("Bearer", res.headers["www-authenticate"])
      assert.equals(1, srv:stats().handler_refusals)
      assert.equals(0, srv:stats().handler_errors)
    end)

    it("takes any status from 400 to 599", function()
      for _, s in ipairs({ 400, 451, 599 }) do
        local _, status = srv:try_connect("/status?s=" .. s)
        assert.equals(s, status)
      end
    end)
  end)

  describe("results that are errors", function()
    it("a protocol the client did not offer", function()
      assert.equals(1, handler_error("/select?p=graphql-ws", { protocols = { "chat" } }))
      assert.equals(2, handler_error("/select?p=chat"))
      -- Subprotocol names are case-sensitive.
      assert.equals(3, handler_error("/select?p=Chat", { protocols = { "chat" } }))
    end)

    it("a header the server owns, a hop-by-hop header, or one that could split the head", function()
      local n = 0
      for _, h in ipairs({
        "name=Sec-WebSocket-Protocol&value=chat",
        "name=Upgrade&value=h2c",
        "name=connection&value=close",
        "name=Content-Length&value=0",
        "name=Transfer-Encoding&value=chunked",
        "name=Keep-Alive&value=5",
        "name=Proxy-Authenticate&value=x",
        "name=X-A&value=a%0D%0ASet-Cookie:%20evil=1",
        "name=X-A&value=a%00b",
        "name=X%20A&value=1",
        "name=&value=1",
      }) do
        n = n + 1
        assert.equals(n, handler_error("/header?" .. h))
      end
      assert.equals("open", srv:connect("/header?name=X-Fine&value=1").state)
    end)

    it("a refusal status outside 400-599", function()
      assert.equals(1, handler_error("/status?s=200"))
      assert.equals(2, handler_error("/status?s=302"))
      assert.equals(3, handler_error("/status?s=abc"))
      assert.equals(4, handler_error("/status?s=401.5"))
      assert.equals(5, handler_error("/status?s=600"))
    end)

    it("a body that is not a string, a misspelt option, a non-table second result", function()
      assert.equals(1, handler_error("/body"))
      assert.equals(2, handler_error("/option"))
      assert.equals(3, handler_error("/second"))
    end)

    it("leaves the server serving", function()
      handler_error("/select?p=x")
      local c = srv:connect("/first", { protocols = { "x" } })
      assert.equals("x", c.protocol)
    end)
  end)
end)

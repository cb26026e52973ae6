-- scripts/echo.lua, run by the busted kit against the real core.
local testing = require "moonroom.testing"

describe("scripts/echo.lua", function()
  local srv, conn

  before_each(function()
    srv = testing.server("scripts/echo.lua")
    conn = srv:connect("/any/path?at=all")
  end)

  after_each(function()
    srv:close()
  end)

  it("accepts any path (it has no on_connect)", function()
    assert.equals("open", conn.state)
    assert.same({}, conn:messages())
    assert.same({}, conn:rooms())
  end)

  it("sends text back as text", function()
    conn:send("text")
    assert.same({ { data = "text", binary = false } }, conn:received())
  end)

  it("sends binary back as binary", function()
    conn:send("\0bin\255", true)
    assert.same({ { data = "\0bin\255", binary = true } }, conn:received())
  end)

  it("echoes empty messages", function()
    conn:send("")
    conn:send("", true)
    assert.same({ { data = "", binary = false }, { data = "", binary = true } }, conn:received())
  end)

  it("keeps the order", function()
    for i = 1, 10 do conn:send(tostring(i), i % 2 == 0) end
    local got = conn:received()
    for i = 1, 10 do
      assert.same({ data = tostring(i), binary = i % 2 == 0 }, got[i])
    end
  end)

  it("answers only the sender", function()
    local other = srv:connect("/")
    conn:send("mine")
    assert.same({}, other:messages())
    assert.same({ "mine" }, conn:messages())
  end)

  it("echoes a message of the largest size the server accepts", function()
    local small = testing.server("scripts/echo.lua", { max_message = 4096 })
    local c = small:connect("/")
    c:send(string.rep("e", 4096))
    assert.equals(4096, #c:next())
    c:send(string.rep("e", 4097))
    assert.equals(1009, c.close_code)
    small:close()
  end)

  it("closes cleanly", function()
    conn:close(1000, "done")
    assert.is_true(conn.closed)
    assert.equals(1000, conn.server_close_code)
    assert.equals("done", conn.server_close_reason)
  end)
end)

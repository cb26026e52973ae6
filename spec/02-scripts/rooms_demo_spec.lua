-- The spec shown in the README's "Testing your handlers": copy it next to
-- your own script and change the paths.
local testing = require "moonroom.testing"

describe("scripts/rooms-demo.lua", function()
  local srv

  before_each(function()
    srv = testing.server("scripts/rooms-demo.lua")
  end)

  after_each(function()
    srv:close()
  end)

  it("refuses a missing token with 401 and a bad path with 404", function()
    local conn, status, body = srv:try_connect("/rooms/dev")
    assert.is_nil(conn)
    assert.equals(401, status)
    assert.equals("bad token", body)
    local _, status2 = srv:try_connect("/elsewhere?token=letmein")
    assert.equals(404, status2)
  end)

  it("puts clients in the room named by the path and announces them", function()
    local ada = srv:connect("/rooms/dev?token=letmein&name=ada")
    local bob = srv:connect("/rooms/dev?token=letmein&name=bob")
    assert.same({ ada.id, bob.id }, srv:members("dev"))
    assert.same({ "bob joined" }, ada:messages())
    assert.same({}, bob:messages())
  end)

  it("broadcasts text to the room, sender included", function()
    local ada = srv:connect("/rooms/dev?token=letmein&name=ada")
    local bob = srv:connect("/rooms/dev?token=letmein&name=bob")
    ada:messages() -- drop the join notice
    ada:send("hello")
    assert.equals("ada: hello", ada:next())
    assert.equals("ada: hello", bob:next())
  end)

  it("relays binary to everyone but the sender, still binary", function()
    local ada = srv:connect("/rooms/dev?token=letmein&name=ada")
    local bob = srv:connect("/rooms/dev?token=letmein&name=bob")
    ada:messages()
    ada:send("\0\1\2", true)
    assert.same({ { data = "\0\1\2", binary = true } }, bob:received())
    assert.same({}, ada:received())
  end)

  it("answers /count and keeps rooms apart", function()
    local ada = srv:connect("/rooms/dev?token=letmein&name=ada")
    srv:connect("/rooms/ops?token=letmein&name=cat")
    ada:send("/count")
    assert.equals("1 here", ada:next())
  end)

  it("tells the room when someone leaves, with the close code", function()
    local ada = srv:connect("/rooms/dev?token=letmein&name=ada")
    local bob = srv:connect("/rooms/dev?token=letmein&name=bob")
    ada:messages()
    bob:close(4000, "bye")
    assert.equals(4000, bob.server_close_code)
    assert.equals("bob left (4000)", ada:next())
    assert.same({ ada.id }, srv:members("dev"))
  end)

  it("delivers a broadcast forwarded by another node", function()
    local ada = srv:connect("/rooms/dev?token=letmein&name=ada")
    assert.equals(1, srv:remote_broadcast("dev", "from node b"))
    assert.equals("from node b", ada:next())
  end)
end)

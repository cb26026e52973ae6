-- ws.clock() reads the monotonic clock now, while ws.now() is the loop's
-- clock cached once per turn (issue 16, item 6c): inside a long handler the
-- first moves and the second stands still. In the kit, ws.now() is the
-- frozen clock srv:advance moves, and ws.clock() is still the real one.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local SCRIPT = [[
local ws = require "moonroom"
return {
  on_message = function(conn, msg)
    local n0, c0 = ws.now(), ws.clock()
    local t = os.clock()
    while os.clock() - t < tonumber(msg) do end
    conn:send(("%s %.3f %.3f %.3f %.3f"):format(type(ws.clock()),
      ws.now() - n0, ws.clock() - c0, ws.now(), ws.clock()))
  end,
}
]]

describe("moonroom.testing: ws.clock", function()
  local path, srv

  before_each(function()
    path = helpers.temp_script(SCRIPT)
    srv = testing.server(path)
  end)

  after_each(function()
    srv:close()
    os.remove(path)
  end)

  it("advances during a busy handler, where ws.now() does not", function()
    local a = srv:connect("/")
    a:send("0.05")
    local kind, now_d, clock_d = a:messages()[1]:match("^(%S+) (%S+) (%S+)")
    assert.equals("number", kind)
    assert.equals(0, tonumber(now_d))
    assert.is_true(tonumber(clock_d) >= 40, clock_d)
  end)

  it("is the real clock, not the kit's frozen one", function()
    local a = srv:connect("/")
    a:send("0")
    local now1, clock1 = a:messages()[1]:match("(%S+) (%S+)$")
    srv:advance(60000)
    a:send("0")
    local now2, clock2 = a:messages()[1]:match("(%S+) (%S+)$")
    assert.equals(60000, tonumber(now2) - tonumber(now1))
    assert.is_true(tonumber(clock2) - tonumber(clock1) < 1000)
  end)
end)

-- The kit: hot reload (what SIGHUP and the file watcher do) keeps
-- connections, their state and their rooms.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local function version(v, extra)
  return ([[
local ws = require "moonroom"
local V = "%s"
return {
  on_connect = function(conn, req)
    ws.join(conn, req.query.room or "lobby")
  end,
  on_message = function(conn, msg)
    conn.state.n = (conn.state.n or 0) + 1
    conn:send(V .. " " .. msg .. " #" .. conn.state.n)
  end,
  %s
}
]]):format(v, extra or "")
end

describe("moonroom.testing: reload", function()
  local path, srv

  before_each(function()
    path = helpers.temp_script(version("v1"))
    srv = testing.server(path)
  end)

  after_each(function()
    srv:close()
    os.remove(path)
  end)

  it("swaps the handlers and keeps connections, state and rooms", function()
    local a = srv:connect("/?room=r")
    local b = srv:connect("/?room=s")
    a:send("hi")
    assert.equals("v1 hi #1", a:next())
    local before = srv:version()
    helpers.write_file(path, version("v2"))
    assert.is_true(srv:reload())
    assert.matches("^version 2 ", srv:version())
    assert.not_equals(before, srv:version())
    assert.equals("open", a.state)
    a:send("hi")
    assert.equals("v2 hi #2", a:next())
    assert.same({ a.id }, srv:members("r"))
    assert.same({ b.id }, srv:members("s"))
    assert.equals(1, srv:stats().reloads)
  end)

  it("runs on_reload, which may already use the connections", function()
    local a = srv:connect("/?room=lobby")
    helpers.write_file(path, version("v2", [[
  on_reload = function(old)
    ws.broadcast("lobby", "reloaded, old had on_message: " .. tostring(old.on_message ~= nil))
  end,]]))
    assert.is_true(srv:reload())
    assert.same({ "reloaded, old had on_message: true" }, a:messages())
  end)

  it("keeps the old handlers when the new script does not load", function()
    local a = srv:connect("/")
    helpers.write_file(path, "return {\n  on_message = \n}\n")
    local ok, err = srv:reload()
    assert.is_nil(ok)
    assert.matches(":3:", err)
    a:send("still")
    assert.equals("v1 still #1", a:next())
    assert.equals(1, srv:stats().reload_failures)
    assert.matches("^version 1 ", srv:version())
  end)

  it("keeps the old handlers when on_reload raises", function()
    local a = srv:connect("/")
    helpers.write_file(path, version("v2", [[
  on_reload = function() error("no migration") end,]]))
    helpers.with_logs(function()
      local ok, err = srv:reload()
      assert.is_nil(ok)
      assert.matches("on_reload", err)
    end)
    a:send("x")
    assert.equals("v1 x #1", a:next())
  end)
end)

-- Shared helpers for the specs (the Kong habit: one helper module).
local spy = require "luassert.spy"

local helpers = {}

--- A stand-in for the C core module with spies on every function, so a spec
-- can load lua/moonroom.lua and the scripts without a server, and assert on
-- what they called. Rooms are modelled just enough for the scripts to run.
function helpers.fake_core()
  local core = { _rooms = {}, logs = {} }
  local function members_of(room)
    core._rooms[room] = core._rooms[room] or {}
    return core._rooms[room]
  end
  core.version = function() return "moonroom test" end
  core.join = spy.new(function(conn, room)
    local m = members_of(room)
    if m[conn] then return false end
    m[conn] = true
    return true
  end)
  core.leave = spy.new(function(conn, room)
    local m = members_of(room)
    local was = m[conn] ~= nil
    m[conn] = nil
    return was
  end)
  core.broadcast = spy.new(function(room, msg)
    local n = 0
    for conn in pairs(members_of(room)) do
      conn:send(msg)
      n = n + 1
    end
    return n
  end)
  core.broadcast_except = spy.new(function(room, msg, except)
    local n = 0
    for conn in pairs(members_of(room)) do
      if conn ~= except then
        conn:send(msg)
        n = n + 1
      end
    end
    return n
  end)
  core.members = function(room)
    local list = {}
    for conn in pairs(members_of(room)) do list[#list + 1] = conn end
    table.sort(list, function(a, b) return a.id < b.id end)
    return list
  end
  core.rooms = function(conn)
    local list = {}
    for room, m in pairs(core._rooms) do
      if m[conn] then list[#list + 1] = room end
    end
    table.sort(list)
    return list
  end
  core.count = function(room)
    local n = 0
    for _ in pairs(members_of(room)) do n = n + 1 end
    return n
  end
  core.log = spy.new(function(level, msg) core.logs[#core.logs + 1] = { level, msg } end)
  core.stats = function() return {} end
  core.now = function() return 0 end
  return core
end

--- Installs a fake core and returns a fresh copy of the moonroom module.
function helpers.load_moonroom(core)
  package.loaded["moonroom"] = nil
  package.loaded["moonroom.core"] = core
  return require "moonroom"
end

local next_id = 0
--- A fake connection that records what it was sent.
function helpers.fake_conn()
  next_id = next_id + 1
  local conn = { id = next_id, state = {}, inbox = {} }
  function conn:send(msg) self.inbox[#self.inbox + 1] = msg return true end
  function conn:rooms() return package.loaded["moonroom.core"].rooms(self) end
  return conn
end

-- ---- the busted kit ----------------------------------------------------------
-- Specs that use the kit need build/lua/moonroom/sim.so (see .busted); the
-- fake-core helpers above never load it.

--- The kit module, moonroom.testing.
function helpers.kit()
  return require "moonroom.testing"
end

--- Path of a fixture script under spec/fixtures/.
function helpers.fixture(name)
  return "spec/fixtures/" .. name .. ".lua"
end

--- Runs fn with the core's log level set to level ("off" by default), then
-- restores it, so specs that provoke handler errors do not print tracebacks.
function helpers.with_logs(level, fn)
  if type(level) == "function" then
    level, fn = "off", level
  end
  local testing = helpers.kit()
  local prev = testing.log_level(level)
  local ok, err = pcall(fn)
  testing.log_level(prev)
  if not ok then
    error(err, 0)
  end
end

--- Writes src to a new temporary .lua file and returns its path (for reload
-- specs); helpers.write_file(path, src) rewrites it.
function helpers.write_file(path, src)
  local f = assert(io.open(path, "wb"))
  f:write(src)
  f:close()
  return path
end

function helpers.temp_script(src)
  local path = os.tmpname()
  os.remove(path)
  path = path .. ".lua"
  return helpers.write_file(path, src)
end

--- Connects an observer to a server running spec/fixtures/recorder.lua: it
-- receives one line per handler call ("connect ID ...", "message ID ...",
-- "close ID CODE REASON").
function helpers.observer(srv)
  return srv:connect("/?observe=1")
end

--- A server on spec/fixtures/eval.lua and one connection to it: the pair
-- the API specs drive with helpers.eval. Returns srv, conn.
function helpers.eval_server(target)
  local srv = require("moonroom.testing").server(helpers.fixture("eval"))
  return srv, srv:connect(target or "/")
end

--- Runs a chunk of Lua in the eval server through conn; returns its answer
-- ("ok ..." or "error ...").
function helpers.eval(conn, code)
  assert(conn:send(code) == true, "the eval connection is not open")
  return conn:next()
end

return helpers

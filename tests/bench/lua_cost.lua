-- The Lua side of a handler's cost, without the server: runs a bench script's
-- on_message on messages shaped like the load generator's, with the real
-- `moonroom` module (lua/moonroom.lua, so ws.json is lua-cjson as in the
-- server) over a stub core whose broadcast does nothing. Run with the same
-- LuaJIT the server links:
--   luajit tests/bench/lua_cost.lua tests/bench/bench_work.lua [N]
-- Prints one JSON object. What it leaves out (the C call into the handler, the
-- real broadcast, reading and writing frames, and the core's UTF-8 check of
-- encoded JSON, a few ns for these messages) is the same for every script, so
-- the differences between scripts are what a handler adds per message. A
-- script whose name has "json" in it gets the messages as {"text":"..."}, as
-- moonroom-loadgen --json sends them.
local script, n = arg[1], tonumber(arg[2]) or 2000000
local sink
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../.."
package.path = root .. "/lua/?.lua;" .. package.path
local states = {}
package.preload["moonroom.core"] = function()
  return {
    version = function() return "moonroom (lua_cost stub)" end,
    log = function() end,
    join = function() return true end,
    broadcast = function(room, msg, is_binary) sink = msg; return 1 end,
    room_state = function(room)
      local st = states[room]
      if not st then st = {}; states[room] = st end
      return st
    end,
    utf8_valid = function() return true end,
  }
end
local wrap = script:match("json[^/]*$") ~= nil
local h = dofile(script)
local conn = newproxy(true) -- stands in for a connection handle (a userdata)
getmetatable(conn).__index = { id = 1 }
h.on_connect(conn, { query = { room = "bench", role = "pub" }, headers = {} })

local msgs = {}
for i = 1, 1024 do
  local m = string.format("%016x %016x %08x %08x ", i, 1e9 + i * 1000, 0, 0)
  msgs[i] = m .. string.rep("x", 64 - #m)
  if wrap then msgs[i] = '{"text":"' .. msgs[i] .. '"}' end
end

local on_message = h.on_message
local function run(count)
  for i = 1, count do on_message(conn, msgs[(i % 1024) + 1], false) end
end
run(100000) -- warm up, let the JIT settle
collectgarbage()
local best = math.huge
for _ = 1, 5 do
  local t0 = os.clock()
  run(n)
  local t = (os.clock() - t0) / n
  if t < best then best = t end
end
assert(sink ~= nil, "the handler never broadcast")
io.write(string.format('{"script":"%s","ns_per_msg":%.1f,"messages":%d}\n',
  script:match("[^/]+$"), best * 1e9, n))

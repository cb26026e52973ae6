-- The Lua side of a handler's cost, without the server: runs a bench script's
-- on_message on messages shaped like the load generator's, with a stub
-- `moonroom` module whose broadcast does nothing. Run with the same LuaJIT the
-- server links:  luajit tests/bench/lua_cost.lua tests/bench/bench_work.lua [N]
-- Prints one JSON object. What it leaves out (the C call into the handler, the
-- real broadcast, reading and writing frames) is the same for every script,
-- so the differences between scripts are what a handler adds per message.
local script, n = arg[1], tonumber(arg[2]) or 2000000
local sink
package.preload.moonroom = function()
  return {
    join = function() return true end,
    broadcast = function(room, msg, is_binary) sink = msg; return 1 end,
  }
end
local h = dofile(script)
local conn = newproxy(false) -- stands in for a connection handle (a userdata)
h.on_connect(conn, { query = { room = "bench", role = "pub" }, headers = {} })

local msgs = {}
for i = 1, 1024 do
  local m = string.format("%016x %016x %08x %08x ", i, 1e9 + i * 1000, 0, 0)
  msgs[i] = m .. string.rep("x", 64 - #m)
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

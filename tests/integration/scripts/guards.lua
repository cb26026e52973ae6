-- Handler for the Lua guard tests (tests/integration/test_guards.py):
-- --handler-timeout and --lua-memory-limit.
--
--   spin-jit     -> `while true do end`, which LuaJIT compiles into a trace
--                   that no hook can interrupt
--   spin-interp  -> `while true do end` in a function with the JIT off for
--                   it, so that the interpreter runs it and the hook fires
--   spin-calls   -> a compiled loop that calls a C function on every turn:
--                   LuaJIT stitches the call into its traces, so the hook
--                   does not fire here either
--   spin-pcall   -> an interpreted loop that catches every error it can
--   spin-timer   -> answers "armed", then a ws.after callback runs spin-interp
--   grow         -> appends 1 MiB to a table that is never freed
--   stats        -> answers "handler_timeouts=N lua_memory_limit_hits=N
--                   lua_memory_refusals=N handler_errors=N lua_kb=N
--                   timer_errors=N"
--   anything else is echoed back
--
-- on_http: GET /spin runs spin-interp; anything else answers 200 "ok".
local ws = require "moonroom"

local hoard = {}

local function spin_interp()
  while true do end
end
jit.off(spin_interp)

local function spin_pcall()
  while true do
    pcall(spin_interp)
  end
end
jit.off(spin_pcall)

local H = {}

function H.on_message(conn, msg)
  if msg == "spin-jit" then
    ws.log.info("spinning (jit)")
    while true do end
  elseif msg == "spin-interp" then
    ws.log.info("spinning (interpreted)")
    spin_interp()
  elseif msg == "spin-calls" then
    ws.log.info("spinning (calls)")
    local n = 0
    while true do n = n + ws.clock() end
  elseif msg == "spin-pcall" then
    ws.log.info("spinning (pcall)")
    spin_pcall()
  elseif msg == "spin-timer" then
    ws.after(0, function()
      ws.log.info("spinning (timer)")
      spin_interp()
    end)
    conn:send("armed")
  elseif msg == "grow" then
    -- A fresh 1 MiB string each time (a varying prefix), so that
    -- interning cannot share them.
    hoard[#hoard + 1] = #hoard .. ":" .. ("x"):rep(1048576)
    conn:send("grew " .. #hoard)
  elseif msg == "stats" then
    local s = ws.stats()
    conn:send(("handler_timeouts=%d lua_memory_limit_hits=%d " ..
      "lua_memory_refusals=%d handler_errors=%d lua_kb=%d timer_errors=%d"
      ):format(s.handler_timeouts, s.lua_memory_limit_hits,
      s.lua_memory_refusals, s.handler_errors, s.lua_kb, s.timer_errors))
  else
    conn:send(msg)
  end
end

function H.on_http(req)
  if req.path == "/spin" then
    ws.log.info("spinning (http)")
    spin_interp()
  end
  return 200, "ok"
end

return H

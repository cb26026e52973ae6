-- Timer handler for tests/integration/test_timers.py and
-- tests/bench/timers.py.
--
-- Text messages are commands:
--   after MS TAG          ws.after(MS): sends TAG when it runs
--   every MS TAG N        ws.every(MS): sends TAG1, TAG2, ... TAGN, then
--                         cancels itself
--   many N MS             N timers MS from now that do nothing: "armed N"
--   cancelmany            cancels the timers of "many": "cancelled N"
--   boom MS               ws.after(MS) that raises
--   boomevery MS          ws.every(MS) that raises (and is stopped)
--   auth                  cancels this connection's deadline: "welcome"
--   stats                 "timers=N timer_errors=N"
--   anything else         echoed
-- on_connect: ?auth_ms=MS gives the connection MS to send "auth"; past it,
-- conn:after closes it with 4001 "authenticate first".
local ws = require "moonroom"

local many = {}

local H = {}

function H.on_connect(conn, req)
  local ms = tonumber(req.query.auth_ms)
  if ms then
    conn.state.deadline = conn:after(ms, function(c)
      c:close(4001, "authenticate first")
    end)
  end
end

function H.on_message(conn, msg)
  local cmd, a, b, c = msg:match("^(%S+) ?(%S*) ?(%S*) ?(%S*)$")
  if cmd == "after" then
    ws.after(tonumber(a), function(tag) conn:send(tag) end, b)
  elseif cmd == "every" then
    local n, limit = 0, tonumber(c)
    local t
    t = ws.every(tonumber(a), function()
      n = n + 1
      conn:send(b .. n)
      if n == limit then
        t:cancel()
      end
    end)
  elseif cmd == "many" then
    local noop = function() end
    for i = 1, tonumber(a) do
      many[#many + 1] = ws.after(tonumber(b), noop)
    end
    conn:send("armed " .. a)
  elseif cmd == "cancelmany" then
    local n = 0
    for _, t in ipairs(many) do
      if t:cancel() then
        n = n + 1
      end
    end
    many = {}
    conn:send("cancelled " .. n)
  elseif cmd == "boom" then
    ws.after(tonumber(a), function()
      error("timer boom") -- BOOM LINE
    end)
  elseif cmd == "boomevery" then
    ws.every(tonumber(a), function()
      error("every boom") -- BOOM EVERY LINE
    end)
  elseif cmd == "auth" then
    conn.state.deadline:cancel()
    conn:send("welcome")
  elseif cmd == "stats" then
    local s = ws.stats()
    conn:send(("timers=%d timer_errors=%d"):format(s.timers, s.timer_errors))
  else
    conn:send(msg)
  end
end

return H

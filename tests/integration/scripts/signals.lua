-- Handler for the signal and clock tests (tests/integration/test_signals.py).
--
--   spin     -> logs "spinning", then never returns: `while true do end`
--   busy:S   -> logs "busy for S s", runs for S seconds of CPU, then "done"
--   clock:S  -> runs for S seconds of CPU and answers
--               "now=<ws.now() after - before> clock=<ws.clock() after - before>"
--   anything else is echoed back
local ws = require "moonroom"

local function burn(seconds)
  local t = os.clock()
  while os.clock() - t < seconds do end
end

local H = {}

function H.on_message(conn, msg)
  if msg == "spin" then
    ws.log.info("spinning")
    while true do end
  end
  local s = msg:match("^busy:(.+)$")
  if s then
    ws.log.info("busy for %s s", s)
    burn(tonumber(s))
    conn:send("done")
    return
  end
  s = msg:match("^clock:(.+)$")
  if s then
    local n0, c0 = ws.now(), ws.clock()
    burn(tonumber(s))
    conn:send(("now=%.3f clock=%.3f"):format(ws.now() - n0, ws.clock() - c0))
    return
  end
  conn:send(msg)
end

return H

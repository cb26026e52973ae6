-- Handler for the signal and clock tests (tests/integration/test_signals.py).
--
--   spin     -> logs "spinning", then never returns: `while true do end`
--   busy:S   -> logs "busy for S s", runs for S seconds of CPU, then "done"
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
  conn:send(msg)
end

return H

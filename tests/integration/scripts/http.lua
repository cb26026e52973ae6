-- Plain HTTP beside the WebSockets, for tests/integration/test_http.py.
--
-- on_http:
--   /echo          -> 200 "METHOD PATH?QUERY|BODY" (any method)
--   /stats         -> 200 ws.stats() as "name=value" lines
--   /error         -> raises (a handler error: 500)
--   /wrong         -> returns a wrong result (a handler error: 500)
--   /pub/ROOM      -> broadcasts the body to ROOM, 202 with the count
--   /big?n=N       -> 200 with N bytes of "x"
--   anything else  -> 404 "no PATH"
-- WebSocket clients join ?room= (default "r"); a text message is broadcast
-- to that room as it is.
local ws = require "moonroom"

return {
  on_http = function(req)
    local path = req.path
    if path == "/echo" then
      return 200, req.method .. " " .. path .. "?" .. req.query_string .. "|" .. req.body,
        { ["X-Method"] = req.method }
    elseif path == "/stats" then
      local lines = {}
      for k, v in pairs(ws.stats()) do
        lines[#lines + 1] = k .. "=" .. tostring(v)
      end
      table.sort(lines)
      return 200, table.concat(lines, "\n") .. "\n"
    elseif path == "/error" then
      error("deliberate failure")
    elseif path == "/wrong" then
      return "200", "status as a string"
    elseif path == "/big" then
      return 200, string.rep("x", tonumber(req.query.n) or 0)
    end
    local room = path:match("^/pub/(.+)$")
    if room then
      return 202, tostring(ws.broadcast(room, req.body))
    end
    return 404, "no " .. path
  end,

  on_connect = function(conn, req)
    conn.state.room = req.query.room or "r"
    ws.join(conn, conn.state.room)
  end,

  on_message = function(conn, msg, binary)
    ws.broadcast(conn.state.room, msg, binary)
  end,
}

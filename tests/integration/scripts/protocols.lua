-- Handshake control for tests/integration/test_handshake_control.py.
--
-- on_connect, by path:
--   /pick?p=NAME    selects subprotocol NAME (offered or not)
--   /last           selects the last subprotocol offered
--   /none           selects none
--   every accepting path adds "X-Server: moonroom" and two Set-Cookie lines
--   to the 101, and sends "hello PROTOCOL" before returning
--   /refuse         false, 401, "token required", WWW-Authenticate: Bearer
--   /inject         adds a header whose value holds CR LF
--   /status?s=N     false, N
-- on_message: "protocols" answers req.protocols joined with ","; anything
-- else is echoed.
local ws = require "moonroom"

local function accept(conn, req, protocol)
  conn.state.protocols = table.concat(req.protocols, ",")
  conn:send("hello " .. tostring(protocol))
  return true, {
    protocol = protocol,
    headers = {
      ["X-Server"] = "moonroom",
      ["Set-Cookie"] = { "a=1; HttpOnly", "b=2" },
    },
  }
end

return {
  on_connect = function(conn, req)
    local p = req.path
    if p == "/pick" then
      return accept(conn, req, req.query.p)
    elseif p == "/last" then
      return accept(conn, req, req.protocols[#req.protocols])
    elseif p == "/none" then
      return accept(conn, req, nil)
    elseif p == "/refuse" then
      return false, 401, "token required", { ["WWW-Authenticate"] = "Bearer" }
    elseif p == "/inject" then
      return true, { headers = { ["X-Evil"] = "a\r\nSet-Cookie: stolen=1" } }
    elseif p == "/status" then
      return false, tonumber(req.query.s) or req.query.s
    end
    ws.log.warn("unexpected path %s", p)
    return false, 404
  end,

  on_message = function(conn, msg)
    if msg == "protocols" then
      conn:send(conn.state.protocols)
    else
      conn:send(msg)
    end
  end,
}

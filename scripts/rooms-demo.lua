-- scripts/rooms-demo.lua: a room per URL path, a token check, and typing notices.
local ws = require "moonroom"

return {
  on_connect = function(conn, req)
    if req.query.token ~= "letmein" then
      return false, 401, "bad token"
    end
    local room = req.path:match("^/rooms/([%w_-]+)$")
    if not room then
      return false, 404, "use /rooms/NAME"
    end
    conn.state.room = room
    conn.state.name = req.query.name or ("guest" .. conn.id)
    ws.join(conn, room)
    ws.broadcast_except(room, conn.state.name .. " joined", conn)
  end,

  on_message = function(conn, msg, is_binary)
    local room = conn.state.room
    if is_binary then
      -- Relay binary as binary, to everyone but the sender.
      ws.broadcast_except(room, msg, conn, true)
    elseif msg == "/typing" then
      ws.broadcast_except(room, conn.state.name .. " is typing", conn)
    elseif msg == "/count" then
      conn:send(("%d here"):format(ws.count(room)))
    else
      local n = ws.broadcast(room, conn.state.name .. ": " .. msg)
      ws.log.debug("%s -> %d members of %s", conn.state.name, n, room)
    end
  end,

  on_close = function(conn, code, reason)
    ws.broadcast(conn.state.room, conn.state.name .. " left (" .. code .. ")")
  end,
}

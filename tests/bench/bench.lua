-- Benchmark handler: the room semantics the load generator and the Node peer
-- (tests/bench/peer/server.js) agree on, written as an ordinary script would be.
--
--   ws://HOST:PORT/?room=NAME&role=pub|sub
--   * every connection joins `room` (default "bench");
--   * a message from a role=pub connection is broadcast to its room, the sender
--     included, keeping text or binary; role=sub connections only listen, and
--     anything they send is ignored.
--   POST /publish?room=NAME (plain HTTP, keep-alive): the body is broadcast to
--     the room as text, answered 202 with the count (moonroom-loadgen
--     --http-publish; the Node peer has no such path).
local ws = require "moonroom"

local MAX_ROOM = 64
local pub_room = {} -- conn -> room name, for publishers only
local sent = {} -- room name -> messages broadcast (cheap bookkeeping a real app keeps)

return {
  on_connect = function(conn, req)
    local q = req.query or {}
    local room = q.room
    if room == nil or room == "" or #room > MAX_ROOM then room = "bench" end
    ws.join(conn, room)
    if q.role == "pub" then pub_room[conn] = room end
  end,

  on_message = function(conn, msg, is_binary)
    local room = pub_room[conn]
    if room == nil or #msg == 0 then return end
    ws.broadcast(room, msg, is_binary)
    sent[room] = (sent[room] or 0) + 1
  end,

  on_close = function(conn, code, reason)
    pub_room[conn] = nil
  end,

  on_http = function(req)
    if req.path ~= "/publish" or req.method ~= "POST" then
      return 404, "not found\n"
    end
    local room = req.query.room
    if room == nil or room == "" or #room > MAX_ROOM then room = "bench" end
    sent[room] = (sent[room] or 0) + 1
    return 202, tostring(ws.broadcast(room, req.body))
  end,
}

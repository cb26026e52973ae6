-- bench.lua's semantics for clients that speak JSON (moonroom-loadgen --json):
-- a publisher's message is {"text":"..."}; the handler decodes it, looks up
-- its room's state (a per-room message count in ws.room_state), encodes
-- {"from":ID,"text":"..."} and broadcasts that to the room, sender included.
-- What a JSON chat handler does per message, next to bench_min.lua's least.
local ws = require "moonroom"
local decode, encode = ws.json.decode, ws.json.encode
local join, broadcast, room_state = ws.join, ws.broadcast, ws.room_state

local MAX_ROOM = 64
local pub = {} -- conn -> { room = name, from = conn.id }, publishers only

return {
  on_connect = function(conn, req)
    local q = req.query or {}
    local room = q.room
    if room == nil or room == "" or #room > MAX_ROOM then room = "bench" end
    join(conn, room)
    if q.role == "pub" then pub[conn] = { room = room, from = conn.id } end
  end,

  on_message = function(conn, msg, is_binary)
    local p = pub[conn]
    if p == nil then return end
    local m = decode(msg)
    if type(m) ~= "table" or type(m.text) ~= "string" then return end
    local st = room_state(p.room)
    st.sent = (st.sent or 0) + 1
    broadcast(p.room, encode({ from = p.from, text = m.text }), is_binary)
  end,

  on_close = function(conn, code, reason)
    pub[conn] = nil
  end,
}

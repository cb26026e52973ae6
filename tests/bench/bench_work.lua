-- bench.lua plus the kind of per-message work a real chat handler does: parse
-- the message's header fields, validate them, keep per-room and per-sender
-- statistics, and rebuild the outgoing message from its parts (new strings).
-- The rebuilt message is byte-identical, so the load generator's checks hold.
--
-- Message layout (see tests/bench/loadgen.c):
--   "<seq:16 hex> <time:16 hex> <room:8 hex> <sender:8 hex> " .. padding
local ws = require "moonroom"

local MAX_ROOM = 64
local pub = {} -- conn -> { room = name, last = seq, bytes = n }
local rooms = {} -- room name -> { msgs = n, bytes = n }
local tonumber, byte, sub, find = tonumber, string.byte, string.sub, string.find

return {
  on_connect = function(conn, req)
    local q = req.query or {}
    local room = q.room
    if room == nil or room == "" or #room > MAX_ROOM or find(room, "[^%w_%-%.]") then
      room = "bench"
    end
    ws.join(conn, room)
    if q.role == "pub" then
      pub[conn] = { room = room, last = 0, bytes = 0 }
      if not rooms[room] then rooms[room] = { msgs = 0, bytes = 0 } end
    end
  end,

  on_message = function(conn, msg, is_binary)
    local p = pub[conn]
    if p == nil then return end
    local seq_hex, ts_hex, room_hex, who_hex, rest =
      msg:match("^(%x+) (%x+) (%x+) (%x+) (.*)$")
    if not seq_hex or byte(rest, 1) == nil then return end
    local seq = tonumber(sub(seq_hex, 9), 16) -- low 32 bits are enough here
    if seq == nil or tonumber(who_hex, 16) == nil then return end
    p.last = seq
    p.bytes = p.bytes + #msg
    local r = rooms[p.room]
    r.msgs = r.msgs + 1
    r.bytes = r.bytes + #msg
    local out = seq_hex .. " " .. ts_hex .. " " .. room_hex .. " " .. who_hex .. " " .. rest
    ws.broadcast(p.room, out, is_binary)
  end,

  on_close = function(conn, code, reason)
    pub[conn] = nil
  end,
}

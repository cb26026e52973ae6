-- The least work a handler can do for the benchmark's semantics (see bench.lua):
-- join on connect, one table lookup and one broadcast per message. Used by the
-- "Lua cost" scenarios as the baseline against bench.lua and bench_work.lua.
local ws = require "moonroom"
local join, broadcast = ws.join, ws.broadcast
local pub_room = setmetatable({}, { __mode = "k" })

return {
  on_connect = function(conn, req)
    local q = req.query
    local room = q.room or "bench"
    join(conn, room)
    if q.role == "pub" then pub_room[conn] = room end
  end,
  on_message = function(conn, msg, is_binary)
    local room = pub_room[conn]
    if room then broadcast(room, msg, is_binary) end
  end,
}

-- JSON-speaking handler for tests/integration/test_text.py: ws.json,
-- ws.room_list, ws.room_state and the UTF-8 checks at the Lua boundary.
--
-- on_connect: ?room=R joins R as given, without any cleaning (a room that is
-- not UTF-8 makes ws.join raise, so the upgrade is refused with 500).
--
-- A text message is a JSON object; the answer is one JSON object, sent to
-- the sender only:
--   {"op":"echo","value":V}             -> {"value":V} (decoded, re-encoded)
--   {"op":"join","room":R}              -> {"joined":true|false}
--   {"op":"leave","room":R}             -> {"left":true|false}
--   {"op":"list"}                       -> {"rooms":[{"name":R,"count":N},...]}
--   {"op":"set","room":R,"key":K,"value":V} -> {"ok":true} | {"ok":false,"err":E}
--   {"op":"get","room":R,"key":K}       -> {"value":V|null,"err":E|null}
--   {"op":"say","room":R,"text":T}      -> broadcasts {"from":ID,"text":T} to
--                                          R as text, then {"sent":N}
--   {"op":"stats"}                      -> {"stats":{...ws.stats()}}
--   {"op":"peers"}                      -> {"peers":[...]}
--   {"op":"version"}                    -> {"version":VERSION} (a reload test
--                                          rewrites the line that sets it)
-- Text that does not decode is answered {"error":MESSAGE}.
--
-- A binary message is raw bytes the script tries to put in front of the
-- room (conn.state.room) as text, the way a careless script would: the
-- broadcast raises, the script catches it and answers
-- {"refused":MESSAGE}, then relays the bytes as binary.
local ws = require "moonroom"
local json = ws.json

local VERSION = "v1"

local function reply(conn, t)
  conn:send(json.encode(t))
end

local ops = {}

function ops.echo(conn, m)
  reply(conn, { value = m.value })
end

function ops.join(conn, m)
  reply(conn, { joined = ws.join(conn, m.room) })
end

function ops.leave(conn, m)
  reply(conn, { left = ws.leave(conn, m.room) })
end

function ops.list(conn)
  local rooms = ws.room_list()
  -- An empty list would encode as {}; the tests read a missing key as [].
  reply(conn, { rooms = #rooms > 0 and rooms or nil })
end

function ops.set(conn, m)
  local st, err = ws.room_state(m.room)
  if not st then
    return reply(conn, { ok = false, err = err })
  end
  st[m.key] = m.value
  reply(conn, { ok = true })
end

function ops.get(conn, m)
  local st, err = ws.room_state(m.room)
  reply(conn, { value = st and st[m.key] or json.null, err = err or json.null })
end

function ops.say(conn, m)
  local n = ws.broadcast(m.room, json.encode({ from = conn.id, text = m.text }))
  reply(conn, { sent = n })
end

function ops.stats(conn)
  reply(conn, { stats = ws.stats() })
end

function ops.peers(conn)
  local peers = ws.peers()
  reply(conn, { peers = #peers > 0 and peers or nil })
end

function ops.version(conn)
  reply(conn, { version = VERSION })
end

return {
  on_connect = function(conn, req)
    local room = req.query.room
    if room then
      ws.join(conn, room)
      conn.state.room = room
    end
  end,

  on_message = function(conn, msg, is_binary)
    if is_binary then
      local room = conn.state.room or "none"
      local ok, err = pcall(function() ws.broadcast(room, "raw: " .. msg) end)
      if not ok then
        reply(conn, { refused = err })
      end
      ws.broadcast(room, msg, true)
      return
    end
    local m, err = json.decode(msg)
    if not m then
      return reply(conn, { error = err })
    end
    local op = type(m) == "table" and ops[m.op]
    if not op then
      return reply(conn, { error = "unknown op" })
    end
    op(conn, m)
  end,
}

-- Command-driven handler for the cluster integration tests
-- (tests/integration/test_cluster.py). Same conventions as cmd.lua: text
-- messages are commands, anything else is echoed back.
--
--   id                 -> conn.id
--   join:ROOM          -> "joined:ROOM"
--   leave:ROOM         -> "left:ROOM"
--   joinmany:PREFIX:N  -> joins rooms PREFIX1 .. PREFIXN, "joined:N"
--   bcast:ROOM:TEXT    -> ws.broadcast(ROOM, TEXT), then "sent:N"
--   bcastx:ROOM:TEXT   -> ws.broadcast_except(ROOM, TEXT, conn), "sent:N"
--   probe:ROOM:TEXT    -> ws.broadcast(ROOM, TEXT), then "sent:N,forwarded:F"
--                         where F is how many peer links it was queued on
--                         (the growth of ws.stats().cluster_broadcasts_out):
--                         the nodes this node knows to have members in ROOM
--   bbin:ROOM:TEXT     -> ws.broadcast(ROOM, TEXT, true) (binary), "sent:N"
--   big:ROOM:N         -> broadcasts a text message of exactly N bytes,
--                         "sent:N"; see big_text below for its content
--   bigbin:ROOM:N      -> broadcasts a binary message of exactly N bytes,
--                         byte i = i % 256 (not UTF-8), "sent:N"
--   count:ROOM         -> ws.count(ROOM)
--   node               -> ws.node()
--   peers              -> ws.peers(), comma-joined (already sorted)
--   stats              -> sorted "k=v" pairs of ws.stats(), comma-joined
--
-- The Python side tells replies from broadcast deliveries: every message
-- the tests broadcast starts with "M|" (or is binary), and no reply does.
local ws = require "moonroom"

local H = {}

-- "M|big|" followed by the repeating alphabet, cut to exactly n bytes
-- (test_cluster.py builds the same string to compare).
local ALPHA = "abcdefghijklmnopqrstuvwxyz0123456789"
local function big_text(n)
  local head = "M|big|"
  local body = string.rep(ALPHA, math.floor(n / #ALPHA) + 1)
  return (head .. body):sub(1, n)
end

local function big_binary(n)
  local bytes = {}
  for i = 0, 255 do bytes[i + 1] = string.char(i) end
  local block = table.concat(bytes)
  return string.rep(block, math.floor(n / 256) + 1):sub(1, n)
end

function H.on_message(conn, msg, is_binary)
  if is_binary then
    conn:send(msg, true)
    return
  end
  local a, b

  if msg == "id" then
    conn:send(string.format("%d", conn.id))
    return
  end

  a = msg:match("^join:(.*)$")
  if a then
    ws.join(conn, a)
    conn:send("joined:" .. a)
    return
  end

  local prefix, n = msg:match("^joinmany:(.*):(%d+)$")
  if prefix then
    for i = 1, tonumber(n) do
      ws.join(conn, prefix .. i)
    end
    conn:send("joined:" .. n)
    return
  end

  a = msg:match("^leave:(.*)$")
  if a then
    ws.leave(conn, a)
    conn:send("left:" .. a)
    return
  end

  a, b = msg:match("^bcast:([^:]*):(.*)$")
  if a then
    conn:send("sent:" .. tostring(ws.broadcast(a, b)))
    return
  end

  a, b = msg:match("^bcastx:([^:]*):(.*)$")
  if a then
    conn:send("sent:" .. tostring(ws.broadcast_except(a, b, conn)))
    return
  end

  a, b = msg:match("^probe:([^:]*):(.*)$")
  if a then
    local before = ws.stats().cluster_broadcasts_out
    local n = ws.broadcast(a, b)
    local forwarded = ws.stats().cluster_broadcasts_out - before
    conn:send(string.format("sent:%d,forwarded:%d", n, forwarded))
    return
  end

  a, b = msg:match("^bbin:([^:]*):(.*)$")
  if a then
    conn:send("sent:" .. tostring(ws.broadcast(a, b, true)))
    return
  end

  a, b = msg:match("^big:([^:]*):(%d+)$")
  if a then
    conn:send("sent:" .. tostring(ws.broadcast(a, big_text(tonumber(b)))))
    return
  end

  a, b = msg:match("^bigbin:([^:]*):(%d+)$")
  if a then
    conn:send("sent:" ..
      tostring(ws.broadcast(a, big_binary(tonumber(b)), true)))
    return
  end

  a = msg:match("^count:(.*)$")
  if a then
    conn:send(tostring(ws.count(a)))
    return
  end

  if msg == "node" then
    conn:send(tostring(ws.node()))
    return
  end

  if msg == "peers" then
    local names = {}
    for i, name in ipairs(ws.peers() or {}) do names[i] = tostring(name) end
    conn:send(table.concat(names, ","))
    return
  end

  if msg == "stats" then
    local t = ws.stats()
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
      local v = t[k]
      if type(v) == "number" then v = string.format("%d", v) end
      parts[i] = k .. "=" .. tostring(v)
    end
    conn:send(table.concat(parts, ","))
    return
  end

  conn:send(msg)
end

return H

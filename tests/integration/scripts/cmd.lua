-- Command-driven handler for the integration tests.
--
-- Text messages are commands; anything that is not a command is echoed back
-- unchanged (text as text). Binary messages are echoed as binary, except
-- that one starting with "LEN" is answered with the text "len:<its size>".
--
--   id                    -> conn.id
--   join:ROOM             -> "joined:ROOM"
--   leave:ROOM            -> "left:ROOM"
--   bcast:ROOM:TEXT       -> ws.broadcast(ROOM, TEXT), then "sent:N"
--   bcastb:ROOM:TEXT      -> same, binary
--   bcastx:ROOM:TEXT      -> ws.broadcast_except(ROOM, TEXT, conn), "sent:N"
--   rooms                 -> sorted room names, comma-joined
--   members:ROOM          -> sorted member ids, comma-joined
--   count:ROOM            -> ws.count(ROOM)
--   stats                 -> sorted "k=v" pairs of ws.stats(), comma-joined
--   state:set:X / state:get -> conn.state.x
--   req                   -> the on_connect request, one "k=v" per line
--   keep                  -> remembers this handle; "kept:ID"
--   sendto:ID:TEXT        -> kept[ID]:send(TEXT); replies "<r1>,<r2>"
--   closeother:ID         -> kept[ID]:close(); replies "<r1>,<r2>"
--   close / close:CODE:REASON -> conn:close([CODE, REASON])
--   error                 -> raises a string error
--   errobj                -> raises a table error
--
-- on_connect: ?crash=1 raises; ?refuse=1 refuses (with ?status=N: status N
-- and body "go away"). on_close reports to room "observers":
--   "closeinfo:ID:ROOMS" (rooms, among those joined, that still list the
--   connection as a member: should be empty) then "closed:ID:CODE:REASON".
local ws = require "moonroom"

local kept = {}

local function sorted_ids(conns)
  local ids = {}
  for _, c in ipairs(conns or {}) do ids[#ids + 1] = c.id end
  table.sort(ids)
  local out = {}
  for i, id in ipairs(ids) do out[i] = string.format("%d", id) end
  return table.concat(out, ",")
end

local function idstr(conn)
  return string.format("%d", conn.id)
end

local H = {}

function H.on_connect(conn, req)
  local q = req.query or {}
  if q.crash == "1" then
    error("crash requested in on_connect")
  end
  if q.refuse == "1" then
    if q.status then
      return false, tonumber(q.status), "go away"
    end
    return false
  end
  conn.state.req = req
  conn.state.rooms = {}
end

local function describe_req(req)
  local lines = {}
  lines[#lines + 1] = "path=" .. tostring(req.path)
  lines[#lines + 1] = "remote=" .. tostring(req.remote_addr)
  for k, v in pairs(req.query or {}) do
    lines[#lines + 1] = "q." .. k .. "=" .. tostring(v)
  end
  for k, v in pairs(req.headers or {}) do
    lines[#lines + 1] = "h." .. k .. "=" .. tostring(v)
  end
  table.sort(lines)
  return table.concat(lines, "\n")
end

function H.on_message(conn, msg, is_binary)
  if is_binary then
    if msg:sub(1, 3) == "LEN" then
      conn:send("len:" .. tostring(#msg))
      return
    end
    conn:send(msg, true)
    return
  end
  local st = conn.state
  local a, b

  if msg == "id" then
    conn:send(idstr(conn))
    return
  end

  a = msg:match("^join:(.*)$")
  if a then
    ws.join(conn, a)
    st.rooms[a] = true
    conn:send("joined:" .. a)
    return
  end

  a = msg:match("^leave:(.*)$")
  if a then
    ws.leave(conn, a)
    st.rooms[a] = nil
    conn:send("left:" .. a)
    return
  end

  a, b = msg:match("^bcast:([^:]*):(.*)$")
  if a then
    local n = ws.broadcast(a, b)
    conn:send("sent:" .. tostring(n))
    return
  end

  a, b = msg:match("^bcastb:([^:]*):(.*)$")
  if a then
    local n = ws.broadcast(a, b, true)
    conn:send("sent:" .. tostring(n))
    return
  end

  a, b = msg:match("^bcastx:([^:]*):(.*)$")
  if a then
    local n = ws.broadcast_except(a, b, conn)
    conn:send("sent:" .. tostring(n))
    return
  end

  if msg == "rooms" then
    local names = {}
    for i, r in ipairs(ws.rooms(conn) or {}) do names[i] = r end
    table.sort(names)
    conn:send(table.concat(names, ","))
    return
  end

  a = msg:match("^members:(.*)$")
  if a then
    conn:send(sorted_ids(ws.members(a)))
    return
  end

  a = msg:match("^count:(.*)$")
  if a then
    conn:send(tostring(ws.count(a)))
    return
  end

  if msg == "stats" then
    local t = ws.stats()
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = k .. "=" .. tostring(t[k]) end
    conn:send(table.concat(parts, ","))
    return
  end

  a = msg:match("^state:set:(.*)$")
  if a then
    st.x = a
    conn:send("ok")
    return
  end

  if msg == "state:get" then
    conn:send(tostring(st.x))
    return
  end

  if msg == "req" then
    conn:send(describe_req(st.req))
    return
  end

  if msg == "keep" then
    kept[conn.id] = conn
    conn:send("kept:" .. idstr(conn))
    return
  end

  a, b = msg:match("^sendto:(%d+):(.*)$")
  if a then
    local other = kept[tonumber(a)]
    local r1, r2 = other:send(b)
    conn:send(tostring(r1) .. "," .. tostring(r2))
    return
  end

  a = msg:match("^closeother:(%d+)$")
  if a then
    local other = kept[tonumber(a)]
    local r1, r2 = other:close()
    conn:send(tostring(r1) .. "," .. tostring(r2))
    return
  end

  if msg == "close" then
    conn:close()
    return
  end

  a, b = msg:match("^close:(%d+):(.*)$")
  if a then
    conn:close(tonumber(a), b)
    return
  end

  if msg == "error" then
    error("boom requested") -- MARK:error
  end

  if msg == "errobj" then
    error({ what = "a table, not a string" })
  end

  conn:send(msg)
end

function H.on_close(conn, code, reason)
  local st = conn.state or {}
  local still = {}
  for room in pairs(st.rooms or {}) do
    for _, c in ipairs(ws.members(room) or {}) do
      if c.id == conn.id then still[#still + 1] = room end
    end
  end
  table.sort(still)
  ws.broadcast("observers", "closeinfo:" .. idstr(conn) .. ":" ..
    table.concat(still, ","))
  ws.broadcast("observers", "closed:" .. idstr(conn) .. ":" ..
    tostring(code) .. ":" .. tostring(reason or ""))
end

return H

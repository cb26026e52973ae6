-- A game lobby: the example to copy for a real application.
--
-- Clients connect to ws://HOST:PORT/?token=TOKEN&name=NAME and speak JSON.
-- The token must equal the LOBBY_TOKEN environment variable (a development
-- default is used, with a warning, when it is unset). Each player is in at
-- most one room at a time, and a room holds at most LOBBY_MAX_PLAYERS (8);
-- when every player of a room (two or more) is ready, a countdown starts,
-- and it is cancelled when someone leaves, joins or is no longer ready.
--
-- Client -> server                     Server -> client
--   {"type":"rooms"}                     {"type":"rooms","rooms":[{"name":..,"count":..}]}
--   {"type":"join","room":"r1"}          {"type":"presence","event":"join","name":..,"players":[..]}
--   {"type":"ready","ready":true}        {"type":"presence","event":"ready",...}
--   {"type":"leave"}                     {"type":"presence","event":"leave",...}
--   {"type":"say","text":"hi"}           {"type":"say","from":..,"text":..}
--                                        {"type":"countdown","seconds":3} ... {"type":"start"}
--                                        {"type":"cancelled","reason":..}
--                                        {"type":"error","error":..}
--
-- It runs the same on one node or on a cluster. The roster is the room's
-- presence (ws.presence), the same on every node: each player is tracked
-- with the meta { name =, ready =, round = }, and a ready change tracks
-- again. A node tells its own clients at once about changes made on it, and
-- about the other nodes' changes from on_presence, with a send loop over its
-- own members (a broadcast there would reach every node once per node). The
-- countdown runs on one node per room, the "leader": the node with the
-- smallest name among those with players in the room. After every change
-- it sees, the leader starts a countdown if every player (two or more) is
-- ready in its view, and cancels a running one on a join, a leave or an
-- unready. It broadcasts the ticks, the start and a cancellation, so each
-- client gets each once.
--
-- "round" counts the games a room has started. A start moves the room to
-- the next round (the leader tracks its players again with it); a player is
-- ready only if ready in the room's highest round, so everyone is unready
-- after a start on every node at once, and each node then tracks its own
-- players again in the new round (no announcement: nothing shown changes).
--
-- What the lobby keeps lives in the server, not in module locals, so a hot
-- reload keeps it: the roster in the presence, a running countdown in
-- ws.room_state(room) (and in its local players' conn.state, for a close
-- that empties the room here), a player's name, room and meta in
-- conn.state. A running countdown's timer keeps the function it was started
-- with across a reload; the next countdown runs the new code.
local ws = require "moonroom"

local COUNTDOWN = 3        -- ticks
-- One tick of the countdown; LOBBY_TICK_MS shortens it (the integration
-- tests use 100 ms).
local TICK_MS = tonumber(os.getenv("LOBBY_TICK_MS")) or 1000
local MAX_NAME = 24
local MAX_ROOM = 64
local MAX_SAY = 500

-- Players per room, on all nodes together (ws.count(room, "cluster")).
local MAX_PLAYERS = tonumber(os.getenv("LOBBY_MAX_PLAYERS") or "8")
if not MAX_PLAYERS or MAX_PLAYERS < 2 or MAX_PLAYERS % 1 ~= 0 then
  error("LOBBY_MAX_PLAYERS must be a whole number of 2 or more", 0)
end

local TOKEN = os.getenv("LOBBY_TOKEN")
if not TOKEN or TOKEN == "" then
  TOKEN = "lobby-dev-token"
  ws.log.warn("LOBBY_TOKEN is not set; accepting the development token")
end

local function send(conn, msg)
  return conn:send(ws.json.encode(msg))
end

-- To every member of the room on every node, once each.
local function publish(room, msg)
  return ws.broadcast(room, ws.json.encode(msg))
end

-- To this node's members of the room only: every node tells its own.
local function tell_local(room, msg)
  local text = ws.json.encode(msg)
  for _, c in ipairs(ws.members(room)) do
    c:send(text)
  end
end

-- The room's highest round among the entries of ws.presence(room).
local function round_of(entries)
  local round = 0
  for _, e in ipairs(entries) do
    local r = e.meta.round
    if type(r) == "number" and r > round then
      round = r
    end
  end
  return round
end

local function is_ready(e, round)
  return e.meta.ready == true and e.meta.round == round
end

-- The room's players on every node as a list sorted by name (stable for
-- clients and specs): { { name = , ready = }, ... }.
local function roster(entries)
  local round = round_of(entries)
  local sorted = {}
  for i, e in ipairs(entries) do
    sorted[i] = e
  end
  table.sort(sorted, function(a, b)
    local na, nb = tostring(a.meta.name), tostring(b.meta.name)
    if na ~= nb then
      return na < nb
    end
    if a.node ~= b.node then
      return a.node < b.node
    end
    return a.id < b.id
  end)
  local list = {}
  for i, e in ipairs(sorted) do
    list[i] = { name = tostring(e.meta.name), ready = is_ready(e, round) }
  end
  return list
end

-- The node that runs the room's countdown: the smallest node name with a
-- player in the room. Every node picks the same one once their views agree.
local function leader(entries)
  local best
  for _, e in ipairs(entries) do
    if not best or e.node < best then
      best = e.node
    end
  end
  return best
end

local function presence(room, event, name)
  tell_local(room, { type = "presence", event = event, name = name,
                     players = roster(ws.presence(room)) })
end

-- A player's entry in the room's presence; conn.state mirrors it.
local function track(conn, room, ready, round)
  conn.state.ready, conn.state.round = ready, round
  return ws.track(conn, room, { name = conn.state.name, ready = ready,
                                round = round })
end

-- A countdown is { room =, left =, timer =, done = }, kept in the room's
-- state and in each local player's conn.state.
local function cancel_countdown(cd, reason)
  if cd and not cd.done then
    cd.done = true
    cd.timer:cancel()
    local state = ws.room_state(cd.room)
    if state and state.countdown == cd then
      state.countdown = nil
    end
    publish(cd.room, { type = "cancelled", reason = reason })
  end
end

local function countdown_of(room)
  local state = ws.room_state(room)
  return state and state.countdown
end

-- One tick of a countdown. At zero the room moves to the next round: this
-- node tracks its players again, unready, in it, so every player is unready
-- on every node (see the header).
local function tick(cd)
  if cd.done then
    cd.timer:cancel()
    return
  end
  cd.left = cd.left - 1
  if cd.left > 0 then
    publish(cd.room, { type = "countdown", seconds = cd.left })
    return
  end
  cd.done = true
  cd.timer:cancel()
  local room = cd.room
  local state = ws.room_state(room)
  if state and state.countdown == cd then
    state.countdown = nil
  end
  local round = round_of(ws.presence(room)) + 1
  for _, c in ipairs(ws.members(room)) do
    if c.state.room == room then
      track(c, room, false, round)
    end
  end
  publish(room, { type = "start", players = roster(ws.presence(room)) })
end

-- Starts the room's countdown if this node leads the room and every player
-- on every node (two or more) is ready. It is asked after every change, on
-- every node, so whichever node leads once the views agree starts it; a
-- remote player's repeated ready is no presence change and reaches nobody.
local function maybe_start(room)
  local state = ws.room_state(room)
  if not state or (state.countdown and not state.countdown.done) then
    return
  end
  local entries = ws.presence(room)
  if #entries < 2 or leader(entries) ~= ws.node() then
    return
  end
  local round = round_of(entries)
  for _, e in ipairs(entries) do
    if not is_ready(e, round) then
      return
    end
  end
  local cd = { room = room, left = COUNTDOWN }
  cd.timer = ws.every(TICK_MS, tick, cd)
  state.countdown = cd
  for _, c in ipairs(ws.members(room)) do
    c.state.countdown = cd
  end
  publish(room, { type = "countdown", seconds = COUNTDOWN })
end

local function leave_room(conn)
  local room = conn.state.room
  if not room then
    return
  end
  conn.state.room = nil
  -- The countdown is found before leaving (the last local member's leave
  -- drops the room's state; in on_close it is gone already).
  local cd = countdown_of(room) or conn.state.countdown
  conn.state.countdown = nil
  ws.untrack(conn, room)
  ws.leave(conn, room) -- nil, "closed" from on_close: it has left already
  cancel_countdown(cd, conn.state.name .. " left")
  presence(room, "leave", conn.state.name)
  maybe_start(room)
end

local function valid_name(s, max)
  return type(s) == "string" and #s >= 1 and #s <= max and ws.utf8_valid(s)
    and not s:find("[%c]")
end

-- This node's rooms, with their members on every node.
local function room_list()
  local rooms = ws.room_list()
  for _, r in ipairs(rooms) do
    r.count = ws.count(r.name, "cluster")
  end
  return rooms
end

local H = {}

function H.on_connect(conn, req)
  local token = req.query.token
  if token ~= TOKEN then
    return false, 401, "missing or wrong token",
      { ["WWW-Authenticate"] = 'Bearer realm="lobby"' }
  end
  local name = req.query.name
  if not valid_name(name, MAX_NAME) then
    return false, 400, "name must be 1 to 24 characters of UTF-8 text"
  end
  conn.state.name = name
  send(conn, { type = "welcome", id = conn.id, name = name,
               rooms = room_list() })
end

local commands = {}

function commands.rooms(conn)
  send(conn, { type = "rooms", rooms = room_list() })
end

function commands.join(conn, msg)
  local room = msg.room
  if not valid_name(room, MAX_ROOM) then
    return "room must be 1 to 64 characters of UTF-8 text"
  end
  if conn.state.room == room then
    return
  end
  -- Advisory across nodes: the other nodes' counts are up to a batch
  -- (50 ms) behind, and during a split each side counts only itself.
  if ws.count(room, "cluster") >= MAX_PLAYERS then
    return ("room %s is full (%d players)"):format(room, MAX_PLAYERS)
  end
  leave_room(conn)
  local round = round_of(ws.presence(room))
  local ok, err = track(conn, room, false, round)
  if not ok then
    return "cannot join: " .. tostring(err)
  end
  ws.join(conn, room)
  conn.state.room = room
  -- A new player is not ready, so a countdown in progress stops.
  cancel_countdown(countdown_of(room), conn.state.name .. " joined")
  presence(room, "join", conn.state.name)
end

function commands.ready(conn, msg)
  local room = conn.state.room
  if not room then
    return "join a room first"
  end
  if type(msg.ready) ~= "boolean" then
    return "ready must be true or false"
  end
  local ok, err = track(conn, room, msg.ready, round_of(ws.presence(room)))
  if not ok then
    return "cannot change ready: " .. tostring(err)
  end
  if not msg.ready then
    cancel_countdown(countdown_of(room), conn.state.name .. " is not ready")
  end
  presence(room, "ready", conn.state.name)
  maybe_start(room)
end

function commands.leave(conn)
  leave_room(conn)
end

function commands.say(conn, msg)
  local room = conn.state.room
  if not room then
    return "join a room first"
  end
  if type(msg.text) ~= "string" or #msg.text > MAX_SAY then
    return "text must be a string of at most 500 bytes"
  end
  publish(room, { type = "say", from = conn.state.name, text = msg.text })
end

function H.on_message(conn, data, binary)
  if binary then
    return send(conn, { type = "error", error = "send JSON text" })
  end
  local msg, err = ws.json.decode(data)
  if type(msg) ~= "table" then
    return send(conn, { type = "error",
                        error = err or "a message is a JSON object" })
  end
  local fn = commands[msg.type]
  if not fn then
    return send(conn, { type = "error",
                        error = "unknown type " .. tostring(msg.type) })
  end
  local problem = fn(conn, msg)
  if problem then
    send(conn, { type = "error", error = problem })
  end
end

function H.on_close(conn)
  leave_room(conn)
end

-- Changes on the other nodes, up to a batch (50 ms) plus the link's latency
-- after they happened. This node's own changes were told as they happened
-- and are skipped here. A meta change is a leave and a join of one entry:
-- it is a "ready" event when the player's readiness in the room's round
-- changed, and nothing when only the round moved (after a start).
function H.on_presence(room, joins, leaves)
  local me = ws.node()
  local entries = ws.presence(room)
  local round = round_of(entries)
  -- This node's players still in an older round catch up, unready.
  for _, c in ipairs(ws.members(room)) do
    if c.state.room == room and (c.state.round or 0) < round then
      track(c, room, false, round)
    end
  end
  local before = {}
  for _, e in ipairs(leaves) do
    if e.node ~= me then
      before[e.node .. "\0" .. e.id] = e
    end
  end
  local events, seen = {}, {}
  for _, e in ipairs(joins) do
    if e.node ~= me then
      local key = e.node .. "\0" .. e.id
      local was = before[key]
      seen[key] = true
      local now = is_ready(e, round)
      if not was then
        events[#events + 1] = { "join", e.meta.name, now, " joined" }
      elseif is_ready(was, round) ~= now then
        events[#events + 1] = { "ready", e.meta.name, now,
                                now and "" or " is not ready" }
      end
    end
  end
  for _, e in ipairs(leaves) do
    local key = e.node .. "\0" .. e.id
    if e.node ~= me and not seen[key] then
      events[#events + 1] = { "leave", e.meta.name, false, " left" }
    end
  end
  for _, ev in ipairs(events) do
    if ev[1] ~= "ready" or not ev[3] then
      cancel_countdown(countdown_of(room), tostring(ev[2]) .. ev[4])
    end
  end
  for _, ev in ipairs(events) do
    presence(room, ev[1], tostring(ev[2]))
  end
  maybe_start(room)
end

return H

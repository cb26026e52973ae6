-- A game lobby: the example to copy for a real application.
--
-- Clients connect to ws://HOST:PORT/?token=TOKEN&name=NAME and speak JSON.
-- The token must equal the LOBBY_TOKEN environment variable (a development
-- default is used, with a warning, when it is unset). Each player is in at
-- most one room at a time; when every player of a room (two or more) is
-- ready, a countdown starts, and it is cancelled when someone leaves, joins
-- or is no longer ready.
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
-- What the lobby keeps lives in the server, not in module locals, so a hot
-- reload keeps it: the room's players and countdown in ws.room_state(room),
-- a player's name and room in conn.state. A running countdown's timer keeps
-- the function it was started with across a reload; the next countdown runs
-- the new code.
local ws = require "moonroom"

local COUNTDOWN = 3        -- ticks
-- One tick of the countdown; LOBBY_TICK_MS shortens it (the integration
-- tests use 100 ms).
local TICK_MS = tonumber(os.getenv("LOBBY_TICK_MS")) or 1000
local MAX_NAME = 24
local MAX_ROOM = 64
local MAX_SAY = 500

local TOKEN = os.getenv("LOBBY_TOKEN")
if not TOKEN or TOKEN == "" then
  TOKEN = "lobby-dev-token"
  ws.log.warn("LOBBY_TOKEN is not set; accepting the development token")
end

local function send(conn, msg)
  return conn:send(ws.json.encode(msg))
end

local function publish(room, msg)
  return ws.broadcast(room, ws.json.encode(msg))
end

-- The room's players as a list sorted by name (stable for clients and
-- specs): { { name =, ready = }, ... }.
local function roster(state)
  local list = {}
  for _, p in pairs(state.players) do
    list[#list + 1] = { name = p.name, ready = p.ready }
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

local function room_of(room)
  local state = ws.room_state(room)
  if state and not state.players then
    state.players = {}
  end
  return state
end

local function cancel_countdown(room, state, reason)
  if state and state.countdown then
    state.countdown.timer:cancel()
    state.countdown = nil
    publish(room, { type = "cancelled", reason = reason })
  end
end

-- One second of a countdown. A timer whose countdown is gone (cancelled,
-- or the room emptied and its state with it) stops itself.
local function tick(room, timer)
  local state = ws.room_state(room)
  local cd = state and state.countdown
  if not cd or cd.timer ~= timer then
    timer:cancel()
    return
  end
  cd.left = cd.left - 1
  if cd.left > 0 then
    publish(room, { type = "countdown", seconds = cd.left })
    return
  end
  timer:cancel()
  state.countdown = nil
  for _, p in pairs(state.players) do
    p.ready = false
  end
  publish(room, { type = "start", players = roster(state) })
end

local function maybe_start(room, state)
  if state.countdown then
    return
  end
  local n = 0
  for _, p in pairs(state.players) do
    if not p.ready then
      return
    end
    n = n + 1
  end
  if n < 2 then
    return
  end
  local timer
  timer = ws.every(TICK_MS, function() tick(room, timer) end)
  state.countdown = { left = COUNTDOWN, timer = timer }
  publish(room, { type = "countdown", seconds = COUNTDOWN })
end

local function presence(room, state, event, name)
  publish(room, { type = "presence", event = event, name = name,
                  players = roster(state) })
end

local function leave_room(conn)
  local room = conn.state.room
  if not room then
    return
  end
  conn.state.room = nil
  ws.leave(conn, room) -- nil, "closed" from on_close: it has left already
  local state = room_of(room)
  if not state then
    return -- it was the last one: the room and its state are gone
  end
  state.players[conn.id] = nil
  cancel_countdown(room, state, conn.state.name .. " left")
  presence(room, state, "leave", conn.state.name)
end

local function valid_name(s, max)
  return type(s) == "string" and #s >= 1 and #s <= max and ws.utf8_valid(s)
    and not s:find("[%c]")
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
               rooms = ws.room_list() })
end

local commands = {}

function commands.rooms(conn)
  send(conn, { type = "rooms", rooms = ws.room_list() })
end

function commands.join(conn, msg)
  local room = msg.room
  if not valid_name(room, MAX_ROOM) then
    return "room must be 1 to 64 characters of UTF-8 text"
  end
  if conn.state.room == room then
    return
  end
  leave_room(conn)
  ws.join(conn, room)
  conn.state.room = room
  local state = room_of(room)
  state.players[conn.id] = { name = conn.state.name, ready = false }
  -- A new player is not ready, so a countdown in progress stops.
  cancel_countdown(room, state, conn.state.name .. " joined")
  presence(room, state, "join", conn.state.name)
end

function commands.ready(conn, msg)
  local room = conn.state.room
  if not room then
    return "join a room first"
  end
  if type(msg.ready) ~= "boolean" then
    return "ready must be true or false"
  end
  local state = room_of(room)
  state.players[conn.id].ready = msg.ready
  if not msg.ready then
    cancel_countdown(room, state, conn.state.name .. " is not ready")
  end
  presence(room, state, "ready", conn.state.name)
  maybe_start(room, state)
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

return H

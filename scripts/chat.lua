-- Chat rooms.
--
-- Connect to ws://127.0.0.1:8080/?room=lobby&name=ada. Every text message is
-- sent to everyone in your room as "ada: hello". Commands:
--   /join ROOM    switch rooms        /nick NAME   change your name
--   /who          list who is here    /rooms       list your rooms
-- Joins, leaves and renames are announced to the room as "* ada joined".
-- A name or room in the URL that is not UTF-8 (?name=%FF) is refused with 400:
-- announced as text, it would make every client in the room fail the
-- connection (1007). Commands arrive in text messages, which are UTF-8.
--
-- Plain HTTP on the same port (on_http):
--   GET  /rooms                  -> 200 {"rooms":[{"name":"lobby","count":2}]}
--   POST /rooms/NAME/messages    -> 202 {"delivered":N}: the request body
--        (UTF-8 text) goes to everyone in room NAME as "[api] BODY". It needs
--        "Authorization: Bearer TOKEN", TOKEN being the server's environment
--        variable CHAT_PUBLISH_TOKEN; without that variable publishing is off
--        (403). A wrong or missing token gets 401.
--   curl -H "Authorization: Bearer $CHAT_PUBLISH_TOKEN" \
--        --data-binary 'deploy finished' http://127.0.0.1:8080/rooms/lobby/messages
--   GET  /, /chat.css, /chat.js  -> the demo page (scripts/chat/): open
--        http://127.0.0.1:8080/?room=lobby&name=ada in a browser
local ws = require "moonroom"

-- Read once, when the script loads: the environment of a running server
-- does not change. An empty value disables publishing as an unset one does.
local PUBLISH_TOKEN = os.getenv("CHAT_PUBLISH_TOKEN")
if PUBLISH_TOKEN == "" then
  PUBLISH_TOKEN = nil
end

local MAX_NAME = 32

local function clean_name(name, fallback)
  if type(name) ~= "string" then
    return fallback
  end
  name = name:gsub("[%c%s]", "")
  if name == "" or #name > MAX_NAME then
    return fallback
  end
  return name
end

local function clean_room(room)
  if type(room) ~= "string" or room == "" or #room > 64 or room:find("[%c%s]") then
    return nil
  end
  return room
end

local function announce(room, text, except)
  if except then
    return ws.broadcast_except(room, "* " .. text, except)
  end
  return ws.broadcast(room, "* " .. text)
end

local commands = {}

function commands.join(conn, arg)
  local room = clean_room(arg)
  if not room then
    return conn:send("! usage: /join ROOM (1-64 characters, no spaces)")
  end
  local st = conn.state
  if room == st.room then
    return
  end
  ws.leave(conn, st.room)
  announce(st.room, st.name .. " left")
  st.room = room
  ws.join(conn, room)
  announce(room, st.name .. " joined", conn)
  conn:send("* you are in " .. room)
end

function commands.nick(conn, arg)
  local st = conn.state
  local name = clean_name(arg, nil)
  if not name then
    return conn:send("! usage: /nick NAME (1-32 characters, no spaces)")
  end
  announce(st.room, st.name .. " is now " .. name)
  st.name = name
end

function commands.who(conn)
  local names = {}
  for _, member in ipairs(ws.members(conn.state.room)) do
    names[#names + 1] = member.state.name
  end
  table.sort(names)
  conn:send("* here: " .. table.concat(names, ", "))
end

function commands.rooms(conn)
  conn:send("* rooms: " .. table.concat(ws.rooms(conn), ", "))
end

-- ---- plain HTTP ---------------------------------------------------------------

local JSON = { ["Content-Type"] = "application/json" }

local function json_answer(status, value)
  return status, ws.json.encode(value) .. "\n", JSON
end

-- Compares every byte whatever the first difference, so that the time taken
-- says nothing about how much of a guessed token was right.
local function same_secret(a, b)
  if #a ~= #b then
    return false
  end
  local diff = 0
  for i = 1, #a do
    diff = bit.bor(diff, bit.bxor(a:byte(i), b:byte(i)))
  end
  return diff == 0
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function list_rooms()
  local rooms = ws.room_list()
  -- An empty Lua table is a JSON object to the encoder; the list is an array.
  if #rooms == 0 then
    return 200, '{"rooms":[]}\n', JSON
  end
  return json_answer(200, { rooms = rooms })
end

local function publish(req, name)
  if not PUBLISH_TOKEN then
    return 403, "publishing is disabled: the server has no CHAT_PUBLISH_TOKEN\n"
  end
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)%s*$")
  if not token or not same_secret(token, PUBLISH_TOKEN) then
    return 401, "a valid Authorization: Bearer token is required\n",
      { ["WWW-Authenticate"] = 'Bearer realm="chat"' }
  end
  local room = unescape(name)
  if not ws.utf8_valid(room) or not clean_room(room) then
    return 400, "room must be 1-64 characters of UTF-8 without spaces\n"
  end
  if req.body == "" then
    return 400, "the message (the request body) is empty\n"
  end
  if not ws.utf8_valid(req.body) then
    return 400, "the message must be valid UTF-8\n"
  end
  return json_answer(202, { delivered = ws.broadcast(room, "[api] " .. req.body) })
end

-- The demo page's files live in chat/ next to this script, read on every
-- request (they are small), so an edit to the page shows on the next reload
-- of the browser without reloading the server.
local PAGE_DIR = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
  .. "/chat/"
local PAGE_FILES = {
  ["/"] = { "index.html", "text/html; charset=utf-8" },
  ["/chat.css"] = { "chat.css", "text/css; charset=utf-8" },
  ["/chat.js"] = { "chat.js", "text/javascript; charset=utf-8" },
}

local function page(req)
  local file = PAGE_FILES[req.path]
  local f = io.open(PAGE_DIR .. file[1], "rb")
  if not f then
    ws.log.error("demo page file %s%s is missing", PAGE_DIR, file[1])
    return 404, "not found\n"
  end
  local body = f:read("*a")
  f:close()
  return 200, body, { ["Content-Type"] = file[2], ["Cache-Control"] = "no-cache" }
end

local routes = {
  -- A pattern, the method it answers, and a function(req, captures...).
  { "^/$", "GET", page },
  { "^/chat%.css$", "GET", page },
  { "^/chat%.js$", "GET", page },
  { "^/rooms$", "GET", list_rooms },
  { "^/rooms/([^/]+)/messages$", "POST", publish },
}

local function on_http(req)
  for _, route in ipairs(routes) do
    local captures = { req.path:match(route[1]) }
    if captures[1] then
      local method = req.method == "HEAD" and route[2] == "GET" and "GET" or req.method
      if method ~= route[2] then
        return 405, "method not allowed\n",
          { Allow = route[2] == "GET" and "GET, HEAD" or route[2] }
      end
      return route[3](req, unpack(captures))
    end
  end
  return 404, "not found\n"
end

return {
  on_http = on_http,

  on_connect = function(conn, req)
    for _, key in ipairs { "name", "room" } do
      local value = req.query[key]
      if value and not ws.utf8_valid(value) then
        return false, 400, key .. " must be valid UTF-8"
      end
    end
    local room = clean_room(req.query.room or "lobby")
    if not room then
      return false, 400, "room must be 1-64 characters without spaces"
    end
    conn.state.name = clean_name(req.query.name, "guest" .. conn.id)
    conn.state.room = room
    ws.join(conn, room)
    announce(room, conn.state.name .. " joined", conn)
  end,

  on_message = function(conn, msg, is_binary)
    if is_binary then
      return conn:send("! binary messages are not supported")
    end
    local cmd, arg = ws.command(msg)
    if cmd then
      local fn = commands[cmd]
      if not fn then
        return conn:send("! unknown command /" .. cmd)
      end
      return fn(conn, arg)
    end
    ws.broadcast(conn.state.room, conn.state.name .. ": " .. msg)
  end,

  on_close = function(conn)
    -- The connection has already left its rooms; tell the room it was in.
    announce(conn.state.room, conn.state.name .. " left")
  end,
}

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
local ws = require "moonroom"

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

return {
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

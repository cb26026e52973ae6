--- The moonroom handler API.
--
-- Handler scripts `require "moonroom"`. The functions that touch rooms and
-- connections are implemented in C (`moonroom.core`); this module adds the
-- conveniences that are easier to write, test and read in Lua. It is
-- compiled into the server at build time and loaded by the busted kit too,
-- so both run exactly this file.
local core = require "moonroom.core"

local M = {}

-- Room and connection primitives, straight from the core:
--   join(conn, room)                 -> true | false (already in) | nil, "closed"
--   leave(conn, room)                -> true | false (was not in) | nil, "closed"
--   broadcast(room, msg [, binary])  -> number of local members it was queued for
--   broadcast_except(room, msg, conn [, binary]) -> number queued
--   send(conn, msg [, binary])       -> true | nil, "closed"
--   close(conn [, code [, reason]])  -> true | nil, "closed"
--   rooms(conn)                      -> sorted list of room names | nil, "closed"
--   members(room)                    -> list of connection handles
--   count(room)                      -> number of local members
--   stats()                          -> table of server counters
--   now()                            -> event loop clock, milliseconds
--   utf8_valid(s)                    -> true | false
for name, fn in pairs(core) do
  M[name] = fn
end

M.version = core.version()

local function emit(level, fmt, ...)
  if select("#", ...) > 0 then
    fmt = string.format(fmt, ...)
  elseif type(fmt) ~= "string" then
    fmt = tostring(fmt)
  end
  -- The core names the caller's file and line; level 2 here is the script.
  return core.log(level, fmt)
end

--- Logging to the server log: ws.log.info("joined %s", room).
M.log = setmetatable({
  debug = function(...) return emit("debug", ...) end,
  info = function(...) return emit("info", ...) end,
  warn = function(...) return emit("warn", ...) end,
  error = function(...) return emit("error", ...) end,
}, {
  -- ws.log("text") logs at info level.
  __call = function(_, ...) return emit("info", ...) end,
})

--- Splits a chat-style command: "/join lobby" -> "join", "lobby".
-- Returns nil when msg is not a command.
function M.command(msg)
  local cmd, rest = msg:match("^/(%a[%w_]*)%s*(.*)$")
  if not cmd then
    return nil
  end
  return cmd:lower(), rest
end

return M

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
--   after(ms, fn, ...)               -> timer: fn(...) once, ms from now
--   every(ms, fn, ...)               -> timer: fn(...) every ms until cancelled
--   conn:after(ms, fn, ...)          -> timer | nil, "closed": fn(conn, ...)
--                                       once, unless the connection closed
--   timer:cancel()                   -> true if it was pending, else false
--   timer:pending()                  -> true until it ran (once) or was cancelled
--   utf8_valid(s)                    -> true | false
--   room_list()                      -> { { name = room, count = n }, ... } sorted by name
--   room_state(room)                 -> the room's table | nil, "empty room"
--   clock()                          -> the monotonic clock read now, ms with
--                                       fractions; now() is cached per loop
--                                       turn and stands still in a handler
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

--- JSON, backed by a private lua-cjson instance (settings made here do not
-- touch a script's own `require "cjson"`, nor the other way round).
--   json.encode(value) -> string    raises on what JSON cannot say (see below)
--   json.decode(text)  -> value | nil, message    never raises on bad input
--   json.null                       what JSON null decodes to and encodes from
local json = {}
M.json = json

local ok, cjson = pcall(require, "cjson")
if ok then
  cjson = cjson.new()
  -- Only what RFC 8259 allows: no NaN, Infinity or hex numbers either way.
  cjson.encode_invalid_numbers(false)
  cjson.decode_invalid_numbers(false)
  -- cjson's defaults, set here so that they are ours whatever it changes:
  -- deeper nesting (or a table that contains itself) is an error, and an
  -- array with holes is refused once it is mostly holes (more than 10
  -- elements and under half of them set); {} encodes as an object.
  cjson.encode_max_depth(1000)
  cjson.decode_max_depth(1000)
  cjson.encode_sparse_array(false, 2, 10)
  json.null = cjson.null
else
  local missing = "ws.json needs lua-cjson (apt-get install lua-cjson): " ..
    tostring(cjson)
  cjson = setmetatable({}, { __index = function() error(missing, 3) end })
end

local type, pairs, tostring, pcall, error = type, pairs, tostring, pcall, error
local format = string.format
local huge = math.huge
local utf8_valid = core.utf8_valid

-- Where the first string in v (a key or a value) that is not valid UTF-8
-- is, as "the string at value.a[2].b" or "a key of value.a"; only looked
-- for once the encoded text was refused.
local function bad_string(v, path, depth)
  if type(v) == "string" then
    return not utf8_valid(v) and "the string at " .. path or nil
  end
  if type(v) ~= "table" or depth > 1000 then
    return nil
  end
  for k, x in pairs(v) do
    if type(k) == "string" and not utf8_valid(k) then
      return "a key of " .. path
    end
    local where = type(k) == "number" and format("%s[%s]", path, tostring(k))
      or format("%s.%s", path, tostring(k))
    local found = bad_string(x, where, depth + 1)
    if found then
      return found
    end
  end
  return nil
end

--- Encodes a Lua value as JSON text. Raises, naming the problem, for what
-- JSON cannot carry: a string that is not valid UTF-8 (the text would be
-- refused by every client), NaN or infinity, functions and other Lua types,
-- an excessively sparse array, nesting over 1000 levels.
function json.encode(value)
  local ok, out = pcall(cjson.encode, value)
  if not ok then
    error("json.encode: " .. tostring(out), 2)
  end
  -- cjson copies bytes above 0x7F as they are; one check of the whole text
  -- finds any string that is not UTF-8.
  if not utf8_valid(out) then
    local where = bad_string(value, "value", 0) or "a string"
    error("json.encode: " .. where .. " is not valid UTF-8 " ..
      "(send bytes as binary, or encode them as text, e.g. base64)", 2)
  end
  return out
end

-- True when the table t holds, at any depth, a number JSON cannot carry (an
-- overflowed literal such as 1e999 decodes to infinity).
local function has_infinite(t, depth)
  for _, x in pairs(t) do
    local tx = type(x)
    if tx == "number" then
      if x == huge or x == -huge then
        return true
      end
    elseif tx == "table" and depth < 1000 and has_infinite(x, depth + 1) then
      return true
    end
  end
  return false
end

--- Decodes JSON text. Returns the value, or nil and a message for anything
-- that is not one JSON text in UTF-8 (RFC 8259): a syntax error, bytes that
-- are not UTF-8, NaN/Infinity, a number too large for a double, nesting
-- deeper than 1000. So every string it returns is valid UTF-8 and every
-- number finite: what it gives, json.encode takes back.
function json.decode(text)
  if type(text) ~= "string" then
    error("bad argument #1 to 'decode' (string expected, got " .. type(text) .. ")", 2)
  end
  if not utf8_valid(text) then
    return nil, "json.decode: the text is not valid UTF-8"
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok then
    return nil, "json.decode: " .. tostring(value)
  end
  -- A literal past a double's range (1e999) decodes to infinity; looking
  -- for one costs a walk of what was decoded, less than decoding it did.
  local tv = type(value)
  if (tv == "number" and (value == huge or value == -huge))
      or (tv == "table" and has_infinite(value, 0)) then
    return nil, "json.decode: a number is too large for a double"
  end
  return value
end

return M

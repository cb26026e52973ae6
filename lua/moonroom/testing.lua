--- moonroom.testing: test a handler script inside busted, against the real core.
--
--   local testing = require "moonroom.testing"
--   local srv = testing.server("scripts/chat.lua")
--   local ada = srv:connect("/?room=lobby&name=ada")
--   local bob = srv:connect("/?room=lobby&name=bob")
--   assert.same({ "* bob joined" }, ada:messages())
--   ada:send("hi")
--   assert.equals("ada: hi", bob:next())
--   bob:close(4000, "bye")
--   srv:close()
--
-- A simulated server is the server's own C core built as a Lua C module
-- (moonroom.sim, core/testkit.c): the real room registry, the real bridge
-- that loads the script into its own lua_State with the real `moonroom`
-- API, and connections without sockets. A fake connection is fed a real
-- HTTP upgrade request and real masked client frames, and reads back the
-- bytes the server wrote (the HTTP response, then server frames), so the
-- handshake, on_connect, frame parsing (wslay), limits, on_message, the close
-- handshake and on_close are the code paths the server runs. There is no
-- event loop and the clock stands still unless srv:advance(ms) moves it
-- (which runs the timers due on the way): every call runs to completion
-- before it returns (every message delivered, every close finished), so
-- specs are synchronous and deterministic. Connection ids start at 1 on
-- every server.
--
-- A fake client behaves like a well-behaved WebSocket client that reads
-- everything the server wrote at the end of every call: it answers a server
-- close frame with a close frame carrying the same code, and a ping with a
-- pong. What one call makes the server queue for one connection (say, a
-- handler sending it 2 MB in one on_message) counts against
-- max_backpressure all at once, since the client reads only between calls;
-- conn:pause() stops it reading altogether (a slow reader), and a connection
-- over the limit is closed with 1008 the way the server does it: on_close
-- hears 1008, the TCP connection just ends, so the client sees 1006.
-- Idle timeouts, pings and handshake timeouts are not simulated.
--
-- Module
--   testing.server(script [, options]) -> server      raises the load error
--   testing.try_server(script [, options]) -> server | nil, err
--     options (the server's command-line limits, same parser and bounds):
--       max_message = bytes, max_backpressure = bytes, max_head = bytes
--       compression = true | "on" | "off" (permessage-deflate, default off),
--       compression_threshold = bytes, compression_level = 1..9,
--       compression_window = 9..15
--       max_connections_per_ip = n (connections count under opts.remote_addr,
--       127.0.0.1 by default), max_messages_per_second = n,
--       message_burst = n (the bucket refills with srv:advance),
--       allow_origin = "https://example.com, ..." (send an Origin header)
--       lua_memory_limit = MiB (default 1024; 0 = off); --handler-timeout is
--       not simulated (the kit runs no watchdog thread)
--   testing.log_level([level]) -> previous level
--     the core's log threshold for the process: "debug", "info", "warn",
--     "error" (the kit's default) or "off". Logs go to stderr.
--
-- Server
--   srv:connect(target [, opts]) -> conn                raises when refused
--   srv:try_connect(target [, opts]) -> conn | nil, status, body, response
--     target is the request target, "/path?query" (sent as-is: percent-encode
--     it yourself). opts:
--       The defaults are Host: localhost, Upgrade: websocket, Connection:
--       Upgrade, Sec-WebSocket-Key (fixed) and Sec-WebSocket-Version: 13;
--       the 101's Sec-WebSocket-Accept is checked.
--       headers = { ["x-token"] = "t" }   added, sorted by name; a name that
--                 matches a default header (Host, Upgrade, Connection,
--                 Sec-WebSocket-Key, Sec-WebSocket-Version) replaces it and
--                 false removes it. A list { { name, value }, ... } is
--                 appended verbatim instead (repeated headers).
--       method = "GET", remote_addr = "127.0.0.1" (req.remote_addr)
--       protocols = { "graphql-ws", "chat" }   the subprotocols offered, as
--                 one Sec-WebSocket-Protocol header (req.protocols); the
--                 one on_connect selects is conn.protocol. As a real client
--                 does, the kit raises when the server selects a protocol
--                 that was not offered.
--       compress = true   offers permessage-deflate as a browser does
--                 ("permessage-deflate; client_max_window_bits"), or a
--                 string: the Sec-WebSocket-Extensions offer verbatim. When
--                 the server (compression = true) agrees, conn.compressed is
--                 true: conn:send compresses every message (RSV1) and the
--                 server's compressed messages are inflated before they are
--                 read. The kit raises when the server answers an extension
--                 that was not offered.
--     A refusal gives the HTTP status and body (without its final newline),
--     and response = { status, reason, headers, body }.
--   srv:open([opts]) -> conn    a connection with nothing sent yet; drive it
--                               with conn:feed(bytes). opts.remote_addr.
--   srv:conn(id) -> conn | nil (any conn this server made)
--   srv:connections() -> the open conns, by id
--   srv:members(room) -> { id, ... } sorted;  srv:count(room) -> n
--   srv:rooms(conn_or_id) -> sorted names | nil, "closed"
--   srv:room_names() -> sorted names of every room that has members
--   srv:remote_broadcast(room, msg [, binary]) -> n
--     a broadcast forwarded by a peer node arrives: delivered to this
--     server's members of room only (as the cluster link delivers it)
--   srv:stats() -> the counters of ws.stats() (without lua_kb)
--   srv:reload() -> true | nil, err      what SIGHUP does (on_reload runs)
--   srv:version() -> "version N sha256:..."
--   srv:now() -> ms   ws.now()'s clock; it is frozen: only advance moves it
--   srv:advance(ms) -> ms
--     moves the clock ms forward (whole ms) and runs every timer
--     (ws.after, ws.every, conn:after) due in that window, in due order (ties
--     in the order they were scheduled), with the clock set to each one's
--     due time while it runs (so ws.now() inside a callback is its due
--     time) and the clients reading after each due time. Timers that a
--     callback schedules inside the window run too: advance(1000) over
--     ws.every(100, f) runs f ten times, at 100, 200, ..., 1000.
--     advance(0) runs what is due now (ws.after(0, f) from a handler).
--     Timers never run outside advance; srv:close() drops pending ones, as
--     the server does on shutdown.
--   srv:close()   shutdown: open connections are closed with 1001
--                 "server shutting down" (on_close runs), then the server
--                 is freed. srv.closed is true afterwards.
--
-- Connection (the client's side)
--   conn.id          the id the script sees as conn.id
--   conn.state       "connecting" | "open" | "closing" | "closed"
--   conn.closed      true once the server has let go of the connection
--   conn.close_code, conn.close_reason
--                    what the client saw: the code and reason of the server's
--                    close frame (1005 for an empty one), or 1006 and "" when
--                    the connection ended without one (drop, refusal,
--                    backpressure)
--   conn.server_close_code, conn.server_close_reason
--                    what the server's on_close was told (nil when the
--                    connection never opened)
--   conn.response    { status, reason, headers (lower-case names; a
--                    repeated header's values joined with ", "), body }
--                    (body only for a refusal)
--   conn.protocol    the subprotocol the server selected, or nil
--   conn.compressed  true when permessage-deflate was agreed
--   conn.compressed_in, conn.compressed_out
--                    compressed messages received (RSV1 seen, inflated) and
--                    sent; messages under the server's threshold come plain
--   conn:send(data [, binary]) -> true | nil, "closed"   one masked frame
--   conn:send_frame(opcode, payload [, { fin = true, mask = true, rsv = 0 }])
--                    -> true | nil, "closed"   any frame, for protocol specs
--   conn:feed(bytes) -> true | nil, "closed"   raw bytes to the server
--   conn:ping([payload]) -> the pong's payload | nil
--   conn:close([code=1000 [, reason=""]]) -> true | nil, "closed"
--   conn:drop() -> true | nil, "closed"   TCP gone: on_close sees 1006
--   conn:received() -> { { data = s, binary = b }, ... }  unread, in order
--   conn:messages() -> { data, ... }                      unread, in order
--   conn:next() -> data | nil                             the oldest unread
--   conn:next_record() -> { data = s, binary = b } | nil  the same, as a record
--   conn:pending() -> number of unread messages
--   conn:rooms() -> sorted room names | nil, "closed"
--   conn:pause() / conn:resume()   stop / start reading what the server sends
--
-- Cluster: several nodes in one process
--   local c = testing.cluster(3, "scripts/lobby.lua")
--   local ada = c[1]:connect("/?room=lobby&name=ada")
--   local bob = c[2]:connect("/?room=lobby&name=bob")
--   c:kill(2)                  -- gone without a word: the others notice by
--   c:advance(6000)            -- heartbeat, after 5 s of silence
--   assert.same({ "node3" }, c[1]:peers())
--
--   testing.cluster(n, script [, options]) -> cluster   raises the load error
--   testing.try_cluster(n, script [, options]) -> cluster | nil, err
--     n nodes, each a simulated server (the Server API above) running
--     script with the real cluster module (core/cluster.c), joined pairwise
--     by virtual links: the lower-numbered node dials, and the links carry
--     the real wire frames, cookie handshake included, so broadcasts,
--     interest, peers, counts and presence run the production code. Every
--     call settles the whole cluster before it returns: bytes move between
--     the ends of every link and every client reads, until nothing moves.
--     options: the server options above (every node gets them), and
--       names = { "a", "b", ... }   the nodes' names (default "node1", ...)
--       cookie = "s" | { "s1", "s2", ... }  one cookie, or one per node
--   c[i], c:node(i) -> node   node i (c[i] is nil out of range, node raises);
--                             after c:restart(i) it is the new node
--   c.n                       the number of nodes
--   c:now() -> ms             the shared clock; node:now() is the same
--   c:advance(ms) -> ms       (node:advance(ms) is the same) moves the shared
--     clock, running in time order every node's script timers (as
--     srv:advance does) and its cluster heartbeat, every second from the
--     node's start (pings; a handshake older than 5 s or a link silent for
--     5 s closes), with every node's clock at that time and the cluster
--     settled after each step. A link that closed between two nodes that
--     can reach each other is redialed at the next heartbeat.
--   c:settle()                settles by hand (every call already does)
--   c:kill(i)                 node i vanishes (kill -9, a lost machine): its
--     clients see 1006, its script runs no more (no on_close), and its links
--     say nothing: the other nodes drop it when their heartbeat finds the
--     link silent for 5 s (within 6 s of simulated time).
--   c:restart(i) -> node      a fresh node with the same name, script and
--     options replaces node i (killed first if it runs), starts at the
--     cluster's time and dials every node it can reach. A peer that still
--     holds a link to the old node keeps it over the new one (the cluster's
--     rule for duplicate links) until it times out; then the new one links.
--   node:close()              a clean shutdown of one node (what srv:close
--     does): on_close runs, what it broadcasts is carried, then the links
--     close and the other nodes read the end of the stream at once.
--   c:split({1}, {2, 3})      links between nodes of different groups stop
--     carrying bytes (a node in no group is cut off from all); what is sent
--     meanwhile waits in the link, as in a TCP connection, until the
--     heartbeat closes the silent link after 5 s.
--   c:heal()                  links carry again: what waited on a link that
--     survived arrives, and links the heartbeat closed are redialed at once.
--   c:frames() -> { TAG = n }  frames that crossed the links since the start
--     (or reset_frames), by wire tag name from core/wire.h ("HELLO", "PING",
--     "ROOM_TEXT", "COUNTS", "PRESENCE", ...; an unknown tag as "0x2A")
--   c:frames(tag) -> n; c:frames(tag, from, to) -> n  from node from to to
--   c:reset_frames()
--   node:peers() -> sorted names of the nodes it is linked to (ws.peers())
--   node.index, node.name, node.killed (true after c:kill)
--   c:close()                 closes every running node, as node:close()

-- The kit is the server's core built as a LuaJIT C module: under another Lua
-- it cannot load, so say how to select LuaJIT instead of failing later with a
-- page of "module not found" or "undefined symbol: luaL_register".
if not rawget(_G, "jit") then
  error("moonroom.testing: the test kit needs LuaJIT, the Lua moonroom "
    .. "embeds, but this is " .. tostring(_VERSION) .. ". Run "
    .. "`busted --lua=luajit`, or add `lua = \"luajit\"` under _all in "
    .. ".busted (moonroom new writes one).", 0)
end

local found, sim = pcall(require, "moonroom.sim")
if not found then
  local why = tostring(sim)
  if why:find("module 'moonroom.sim' not found", 1, true) then
    why = "the kit's C module moonroom.sim (moonroom/sim.so) is not on "
      .. "package.cpath, which is:\n  " .. package.cpath .. "\nIn a build "
      .. "directory it is build/lua/moonroom/sim.so (cmake --build build; "
      .. "busted --cpath=build/lua/?.so); `cmake --install build --prefix P` "
      .. "puts it in P/lib/lua/5.1, which LuaJIT searches for P=/usr/local; "
      .. "for another P, export LUA_CPATH='P/lib/lua/5.1/?.so;;'."
  else
    why = "cannot load the kit's C module moonroom.sim: " .. why
  end
  error("moonroom.testing: " .. why, 0)
end
local bit = require "bit"

local M = { sim = sim, version = sim.version }

local OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
local OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

local DEFAULT_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
local DEFAULT_HEADERS = {
  { "Host", "localhost" },
  { "Upgrade", "websocket" },
  { "Connection", "Upgrade" },
  { "Sec-WebSocket-Key", DEFAULT_KEY },
  { "Sec-WebSocket-Version", "13" },
}

-- Server options the simulation honours, as command-line flags. Timeouts and
-- pings are not simulated (advance() runs script timers, not the sweep).
local OPTIONS = {
  max_message = "--max-message",
  max_backpressure = "--max-backpressure",
  max_head = "--max-head",
  max_body = "--max-body",
  compression = "--compression",
  compression_threshold = "--compression-threshold",
  compression_level = "--compression-level",
  compression_window = "--compression-window",
  max_connections_per_ip = "--max-connections-per-ip",
  max_messages_per_second = "--max-messages-per-second",
  message_burst = "--message-burst",
  allow_origin = "--allow-origin",
  lua_memory_limit = "--lua-memory-limit",
}

local Server = {}
Server.__index = Server

local Conn = {}
Conn.__index = Conn

local function kit_error(fmt, ...)
  error("moonroom.testing: " .. string.format(fmt, ...), 3)
end

local function close_payload(code, reason)
  return string.char(bit.band(bit.rshift(code, 8), 0xff), bit.band(code, 0xff))
    .. (reason or "")
end

-- ---- requests ----------------------------------------------------------------

local function build_request(target, opts)
  local list = {}
  for i, h in ipairs(DEFAULT_HEADERS) do
    list[i] = { h[1], h[2] }
  end
  local extra = opts.headers
  if extra ~= nil then
    if type(extra) ~= "table" then
      kit_error("headers must be a table")
    end
    if extra[1] ~= nil then
      for _, h in ipairs(extra) do
        list[#list + 1] = { tostring(h[1]), tostring(h[2]) }
      end
    else
      local names = {}
      for name in pairs(extra) do
        names[#names + 1] = name
      end
      table.sort(names)
      for _, name in ipairs(names) do
        local value, replaced = extra[name], false
        for i, h in ipairs(list) do
          if i <= #DEFAULT_HEADERS and h[1]:lower() == name:lower() then
            h[2] = value
            replaced = true
          end
        end
        if not replaced and value ~= false then
          list[#list + 1] = { name, tostring(value) }
        end
      end
    end
  end
  if opts.compress ~= nil and opts.compress ~= false then
    if opts.compress ~= true and type(opts.compress) ~= "string" then
      kit_error("compress must be true or an offer string")
    end
    -- A browser's offer, or the spec's own.
    list[#list + 1] = { "Sec-WebSocket-Extensions",
      opts.compress == true and "permessage-deflate; client_max_window_bits" or opts.compress }
  end
  if opts.protocols ~= nil then
    if type(opts.protocols) ~= "table" then
      kit_error("protocols must be a list of strings")
    end
    if #opts.protocols > 0 then
      list[#list + 1] = { "Sec-WebSocket-Protocol", table.concat(opts.protocols, ", ") }
    end
  end
  local lines, key = {}, nil
  lines[1] = string.format("%s %s HTTP/1.1", opts.method or "GET", target)
  local offered = {}
  for _, h in ipairs(list) do
    if h[2] ~= false then
      lines[#lines + 1] = h[1] .. ": " .. tostring(h[2])
      if h[1]:lower() == "sec-websocket-extensions"
          and tostring(h[2]):lower():find("permessage-deflate", 1, true) then
        offered.deflate = true
      end
      if h[1]:lower() == "sec-websocket-key" then
        key = tostring(h[2])
      elseif h[1]:lower() == "sec-websocket-protocol" then
        for p in tostring(h[2]):gmatch("[^,%s]+") do
          offered[#offered + 1] = p
        end
      end
    end
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n", key, offered
end

local function parse_head(head)
  local line, rest = head:match("^([^\r\n]*)\r\n(.*)$")
  local status, reason = (line or ""):match("^HTTP/1%.1 (%d%d%d) ?([^\r\n]*)$")
  if not status then
    kit_error("the server sent a malformed status line %q", line or head)
  end
  local headers = {}
  for name, value in rest:gmatch("([^:\r\n]+):[ \t]*([^\r\n]*)\r\n") do
    name = name:lower()
    -- Repeated headers are joined as the server joins a request's.
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
  return { status = tonumber(status), reason = reason, headers = headers }
end

-- ---- connections -------------------------------------------------------------

local function new_conn(srv, id, target, key)
  return setmetatable({
    server = srv,
    id = id,
    target = target,
    state = "connecting",
    closed = false,
    _key = key,
    _offered = nil, -- the subprotocols offered, when the kit wrote the request
    _buf = "",
    _inbox = {}, -- unread messages are _inbox[_head .. _tail]
    _head = 1,
    _tail = 0,
    _frag = nil,
    _pongs = {},
    _paused = false,
    compressed = false, -- permessage-deflate was agreed
    compressed_in = 0,  -- compressed messages received (RSV1 seen)
    compressed_out = 0, -- compressed messages sent
  }, Conn)
end

function Conn:__tostring()
  return string.format("moonroom.testing.conn(%d, %s)", self.id, self.state)
end

-- Control frames the client owes the server are written at once, as a
-- client library does.
function Conn:_reply(opcode, payload)
  self.server._sim:feed(self.id, sim.encode(opcode, payload))
end

-- A message as the handler sent it: inflated when it came compressed
-- (counted in conn.compressed_in, the proof that it was).
function Conn:_inflate(payload, compressed)
  if not compressed then
    return payload
  end
  local data, err = sim.inflate(payload)
  if not data then
    kit_error("conn %d: the server sent a compressed message that does not inflate: %s",
              self.id, err)
  end
  self.compressed_in = self.compressed_in + 1
  return data
end

function Conn:_deliver(data, binary)
  self._tail = self._tail + 1
  self._inbox[self._tail] = { data = data, binary = binary }
end

function Conn:_frame(f, alive)
  if f.masked then
    kit_error("conn %d: the server sent a masked frame", self.id)
  end
  -- RSV1 (rsv 4) marks a compressed message, on its first frame only, and
  -- only where permessage-deflate was agreed (RFC 7692 6).
  local compressed = f.rsv == 4 and self.compressed
      and (f.opcode == OP_TEXT or f.opcode == OP_BINARY)
  if f.rsv ~= 0 and not compressed then
    kit_error("conn %d: the server set RSV bits %d", self.id, f.rsv)
  end
  if not f.minimal then
    kit_error("conn %d: the server used a non-minimal length encoding", self.id)
  end
  local op = f.opcode
  if op >= 0x8 and (not f.fin or #f.payload > 125) then
    kit_error("conn %d: the server sent an invalid control frame", self.id)
  end
  if op == OP_TEXT or op == OP_BINARY then
    if self._frag then
      kit_error("conn %d: the server interleaved a new message in a fragmented one", self.id)
    end
    if f.fin then
      self:_deliver(self:_inflate(f.payload, compressed), op == OP_BINARY)
    else
      self._frag = { binary = op == OP_BINARY, compressed = compressed, f.payload }
    end
  elseif op == OP_CONT then
    if not self._frag then
      kit_error("conn %d: the server sent a continuation with no message", self.id)
    end
    self._frag[#self._frag + 1] = f.payload
    if f.fin then
      self:_deliver(self:_inflate(table.concat(self._frag), self._frag.compressed),
                    self._frag.binary)
      self._frag = nil
    end
  elseif op == OP_CLOSE then
    local p = f.payload
    if #p == 1 then
      kit_error("conn %d: the server sent a 1-byte close body", self.id)
    end
    local code = #p >= 2 and p:byte(1) * 256 + p:byte(2) or 1005
    self._close_received = true
    self.close_code, self.close_reason = code, p:sub(3)
    if not self._close_sent and alive then
      -- Echo the code, as browsers and most client libraries do.
      self._close_sent = true
      self:_reply(OP_CLOSE, code == 1005 and "" or close_payload(code))
    end
    self.state = "closing"
  elseif op == OP_PING then
    if alive and not self._close_sent then
      self:_reply(OP_PONG, f.payload)
    end
  elseif op == OP_PONG then
    self._pongs[#self._pongs + 1] = f.payload
  else
    kit_error("conn %d: the server sent reserved opcode %d", self.id, op)
  end
end

-- Bytes the server wrote to this connection.
function Conn:_receive(bytes, alive)
  self._buf = self._buf .. bytes
  if self.state == "connecting" then
    local stop = self._buf:find("\r\n\r\n", 1, true)
    if not stop then
      return
    end
    local res = parse_head(self._buf:sub(1, stop + 3))
    self._buf = self._buf:sub(stop + 4)
    self.response = res
    if res.status == 101 then
      if self._key and res.headers["sec-websocket-accept"] ~= sim.accept_key(self._key) then
        kit_error("conn %d: wrong Sec-WebSocket-Accept %q", self.id,
                  tostring(res.headers["sec-websocket-accept"]))
      end
      local proto = res.headers["sec-websocket-protocol"]
      -- Checked when the kit wrote the request (raw bytes from conn:feed
      -- offer what they offer).
      if proto and self._offered then
        local offered = false
        for _, p in ipairs(self._offered) do
          offered = offered or p == proto
        end
        if not offered then
          kit_error("conn %d: the server selected subprotocol %q, which was not offered",
                    self.id, proto)
        end
      end
      self.protocol = proto
      local ext = res.headers["sec-websocket-extensions"]
      if ext then
        if self._offered and not self._offered.deflate then
          kit_error("conn %d: the server answered extension %q, which was not offered",
                    self.id, ext)
        end
        -- The kit compresses with no context takeover, which is all the
        -- server ever agrees to.
        self.compressed = ext:match("^permessage%-deflate") ~= nil
      end
      self.state = "open"
    else
      local n = tonumber(res.headers["content-length"] or "0") or 0
      res.body = self._buf:sub(1, n)
      self._buf = self._buf:sub(n + 1)
      self.state = "refused"
      return
    end
  end
  if self.state == "refused" or self._close_received then
    return -- nothing after the response or the close frame counts
  end
  local frames, pos = sim.decode(self._buf)
  self._buf = self._buf:sub(pos)
  for _, f in ipairs(frames) do
    self:_frame(f, alive)
    if self._close_received then
      break
    end
  end
end

-- The server has let go of the connection.
function Conn:_gone(grave)
  self.closed = true
  if grave and grave.on_close then
    self.server_close_code, self.server_close_reason = grave.code, grave.reason
  end
  if not self._close_received then
    self.close_code, self.close_reason = 1006, ""
  end
  self.state = "closed"
end

function Conn:_feed(bytes)
  if self.closed then
    return nil, "closed"
  end
  local srv = self.server
  local ok, err = srv._sim:feed(self.id, bytes)
  srv:_pump()
  return ok, err
end

function Conn:feed(bytes)
  assert(type(bytes) == "string", "bytes must be a string")
  return self:_feed(bytes)
end

function Conn:send_frame(opcode, payload, opts)
  opts = opts or {}
  if self.state ~= "open" then
    return nil, "closed"
  end
  local mask = opts.mask
  if mask == nil then
    mask = true
  end
  return self:_feed(sim.encode(opcode, payload or "", opts.fin ~= false, mask, opts.rsv or 0))
end

function Conn:send(data, binary)
  if type(data) ~= "string" then
    error("bad argument #1 to 'send' (string expected, got " .. type(data) .. ")", 2)
  end
  if self.state ~= "open" then
    return nil, "closed"
  end
  if self.compressed then
    -- As browsers do: every message compressed, RSV1 on its frame.
    self.compressed_out = self.compressed_out + 1
    return self:_feed(sim.encode(binary and OP_BINARY or OP_TEXT, sim.deflate(data),
                                 true, true, 4))
  end
  return self:_feed(sim.encode(binary and OP_BINARY or OP_TEXT, data))
end

function Conn:ping(payload)
  if self.state ~= "open" then
    return nil, "closed"
  end
  local before = #self._pongs
  self:_feed(sim.encode(OP_PING, payload or ""))
  if #self._pongs > before then
    return self._pongs[#self._pongs]
  end
  return nil
end

function Conn:close(code, reason)
  if self.state ~= "open" then
    return nil, "closed"
  end
  code = code or 1000
  self._close_sent = true
  self.state = "closing"
  return self:_feed(sim.encode(OP_CLOSE, close_payload(code, reason)))
end

function Conn:drop()
  if self.closed then
    return nil, "closed"
  end
  local srv = self.server
  srv._sim:drop(self.id)
  srv:_pump()
  return true
end

function Conn:received()
  local out = {}
  for i = self._head, self._tail do
    out[#out + 1] = self._inbox[i]
  end
  self._inbox, self._head, self._tail = {}, 1, 0
  return out
end

function Conn:messages()
  local out = {}
  for i, m in ipairs(self:received()) do
    out[i] = m.data
  end
  return out
end

function Conn:next_record()
  if self._head > self._tail then
    return nil
  end
  local m = self._inbox[self._head]
  self._inbox[self._head] = nil
  self._head = self._head + 1
  return m
end

-- One value only, so that assert.equals("x", conn:next()) and
-- assert.matches("^x", conn:next()) work.
function Conn:next()
  local m = self:next_record()
  return m and m.data
end

function Conn:pending()
  return self._tail - self._head + 1
end

function Conn:rooms()
  return self.server:rooms(self)
end

function Conn:pause()
  self._paused = true
end

function Conn:resume()
  self._paused = false
  if not self.server.closed then
    self.server:_pump()
  end
end

-- ---- the server --------------------------------------------------------------

function Server:_check()
  if self.closed then
    kit_error("the server is closed")
  end
end

function Server:_collect_graves()
  for _, g in ipairs(self._sim:graves()) do
    self._graves[g.id] = g
  end
end

function Server:_bury(conn)
  self:_collect_graves()
  local g = self._graves[conn.id]
  self._graves[conn.id] = nil
  self._live[conn.id] = nil
  conn:_gone(g)
end

-- Lets every fake client read what the server wrote and answer what it owes,
-- until nothing moves: then every close has completed.
function Server:_pump()
  local s = self._sim
  for _ = 1, 100000 do
    local progress = false
    local ids = {}
    for id in pairs(self._live) do
      ids[#ids + 1] = id
    end
    table.sort(ids)
    for _, id in ipairs(ids) do
      local c = self._live[id]
      if c then
        if c._paused then
          if not s:state(id) then
            self:_bury(c)
            progress = true
          end
        else
          local bytes, alive = s:take(id)
          if bytes == nil then
            self:_bury(c)
            progress = true
          else
            if #bytes > 0 then
              progress = true
              c:_receive(bytes, alive)
            end
            if not alive or not s:state(id) then
              self:_bury(c)
              progress = true
            end
          end
        end
      end
    end
    if not progress then
      return
    end
  end
  kit_error("the simulated server did not settle")
end

function Server:open(opts)
  self:_check()
  opts = opts or {}
  local id = self._sim:open(opts.remote_addr)
  local conn = new_conn(self, id, nil, nil)
  self._live[id] = conn
  self._conns[id] = conn
  return conn
end

function Server:try_connect(target, opts)
  self:_check()
  if type(target) ~= "string" then
    error("bad argument #1 to 'try_connect' (string expected, got " .. type(target) .. ")", 2)
  end
  opts = opts or {}
  local req, key, offered = build_request(target, opts)
  local conn = self:open(opts)
  conn.target, conn._key, conn._offered = target, key, offered
  conn:_feed(req)
  if conn.state == "connecting" then
    kit_error("%s: no response to the upgrade request", target)
  end
  local res = conn.response
  if not res or res.status ~= 101 then
    local body = res and res.body or ""
    return nil, res and res.status, (body:gsub("\n$", "")), res
  end
  return conn
end

function Server:connect(target, opts)
  local conn, status, body = self:try_connect(target, opts)
  if not conn then
    error(string.format("moonroom.testing: connecting to %s was refused: %s %s",
                        tostring(target), tostring(status), tostring(body)), 2)
  end
  return conn
end

function Server:conn(id)
  return self._conns[id]
end

function Server:connections()
  local list = {}
  for _, c in pairs(self._live) do
    if c.state == "open" then
      list[#list + 1] = c
    end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

function Server:members(room)
  self:_check()
  local ids = self._sim:members(room)
  table.sort(ids)
  return ids
end

function Server:count(room)
  self:_check()
  return self._sim:count(room)
end

function Server:rooms(conn)
  self:_check()
  local id = type(conn) == "table" and conn.id or conn
  local names, err = self._sim:rooms(id)
  if not names then
    return nil, err
  end
  table.sort(names)
  return names
end

function Server:room_names()
  self:_check()
  local names = self._sim:room_names()
  table.sort(names)
  return names
end

function Server:remote_broadcast(room, msg, binary)
  self:_check()
  local n = self._sim:remote_broadcast(room, msg, binary and true or false)
  self:_pump()
  return n
end

-- One plain HTTP request through the real connection path (on_http):
-- srv:request(method, target [, { headers = {...}, body = "...",
-- remote_addr = "..." }]) -> status, body, headers (names lower-cased).
-- The kit sends Host, Content-Length (for a body, or any method but GET and
-- HEAD) and Connection: close unless the headers name them; an interim 100
-- Continue is skipped. A request the server does not answer at once (an
-- incomplete one) is an error of the spec.
function Server:request(method, target, opts)
  self:_check()
  if type(method) ~= "string" or not method:match("^%u+$") then
    error("bad argument #1 to 'request' (an HTTP method such as \"GET\" expected)", 2)
  end
  if type(target) ~= "string" then
    error("bad argument #2 to 'request' (string expected, got " .. type(target) .. ")", 2)
  end
  opts = opts or {}
  local body = opts.body or ""
  if type(body) ~= "string" then
    kit_error("body must be a string")
  end
  local given, names = {}, {}
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then
      kit_error("headers must be a table")
    end
    for name in pairs(opts.headers) do
      names[#names + 1] = name
      given[name:lower()] = true
    end
    table.sort(names)
  end
  local lines = { string.format("%s %s HTTP/1.1", method, target) }
  if not given.host then
    lines[#lines + 1] = "Host: moonroom.test"
  end
  for _, name in ipairs(names) do
    lines[#lines + 1] = name .. ": " .. tostring(opts.headers[name])
  end
  if not given["content-length"] and not given["transfer-encoding"]
    and (#body > 0 or (method ~= "GET" and method ~= "HEAD")) then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  if not given.connection then
    lines[#lines + 1] = "Connection: close"
  end
  local s = self._sim
  local id = s:open(opts.remote_addr)
  s:feed(id, table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
  local out, alive = s:take(id)
  if alive then
    s:drop(id)
  end
  self:_pump()
  out = out or ""
  while out:match("^HTTP/1%.1 1%d%d ") do
    out = out:gsub("^.-\r\n\r\n", "", 1)
  end
  local head, rest = out:match("^(.-\r\n)\r\n(.*)$")
  if not head then
    kit_error("%s %s: no response from the server", method, target)
  end
  local res = parse_head(head)
  local len = tonumber(res.headers["content-length"] or "0")
  if method == "HEAD" then
    len = 0
  end
  return res.status, rest:sub(1, len), res.headers
end

function Server:stats()
  self:_check()
  return self._sim:stats()
end

function Server:reload()
  self:_check()
  local ok, err = self._sim:reload()
  self:_pump()
  return ok, err
end

function Server:version()
  self:_check()
  return self._sim:version()
end

function Server:now()
  self:_check()
  return self._sim:now()
end

-- Steps the clock through every timer due in the window, one timer run per
-- due time, letting the clients read (and answer) after each run, so that
-- what a timer callback schedules inside the window runs too.
function Server:advance(ms)
  self:_check()
  if type(ms) ~= "number" or ms ~= ms or ms < 0 or ms == math.huge then
    error("bad argument #1 to 'advance' (a finite number of ms >= 0 expected)", 2)
  end
  local s = self._sim
  local target = s:now() + math.floor(ms)
  local last, rounds = nil, 0
  while true do
    local due = s:timer_due()
    if not due or due > target then
      break
    end
    -- Timers that keep scheduling timers due at once would never let the
    -- clock move; the server would spin the same way.
    rounds = due == last and rounds + 1 or 0
    if rounds > 100000 then
      kit_error("timers keep scheduling timers due at %d ms: advance cannot finish", due)
    end
    last = due
    s:run_timers(due)
    self:_pump()
  end
  return s:advance(target - s:now())
end

function Server:close()
  if self.closed then
    return
  end
  self._sim:shutdown()
  self:_pump()
  self._sim:free()
  self.closed = true
  for _, c in pairs(self._live) do
    self:_bury(c)
  end
end

function Server:__tostring()
  return string.format("moonroom.testing.server(%s%s)", self.script,
                       self.closed and ", closed" or "")
end

-- ---- the cluster ---------------------------------------------------------------

-- testing.cluster(n, script [, opts]): n simulated servers, each the real core
-- with the real cluster module (core/cluster.c), joined pairwise by virtual
-- links that carry the real wire frames, handshake included. The kit moves the
-- bytes between the two ends of every link (settle) after every call, and
-- drives every node's timers and heartbeat from one shared frozen clock
-- (advance). See the module header for the API.

local Cluster = {}

-- A node is a server (the whole Server API) that belongs to a cluster: what
-- it does is carried to the other nodes before any call returns, and its
-- clock is the cluster's.
local Node = setmetatable({}, { __index = Server })
Node.__index = Node

local HEARTBEAT_MS = 1000 -- MR_LINK_HEARTBEAT_MS (core/link.h)
local DEFAULT_COOKIE = "moonroom-kit-cookie"

-- Options of testing.cluster that are not server options.
local CLUSTER_OPTIONS = { cookie = true, names = true }

local function tag_name(tag)
  return sim.wire_tags[tag] or string.format("0x%02X", tag)
end

local function u32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

function Node:__tostring()
  return string.format("moonroom.testing.node(%d %s, %s%s)", self.index, self.name,
                       self.script, self.closed and ", closed" or "")
end

function Node:_pump()
  Server._pump(self)
  local c = self._cluster
  c._dirty[self.index] = true
  c:_settle()
end

-- The clock is the cluster's: advancing one node advances them all.
function Node:advance(ms)
  return self._cluster:advance(ms)
end

function Node:now()
  self:_check()
  return self._cluster._now
end

-- A clean shutdown (SIGTERM): the node closes its connections (on_close runs
-- and what it broadcasts still reaches the other nodes), then its links; the
-- other nodes read the end of the stream at once.
function Node:close()
  if self.closed then
    return
  end
  Server.close(self)
  self._cluster:_node_gone(self.index, true)
end

-- The names of the nodes this one is linked to (authenticated), sorted: what
-- ws.peers() returns on this node.
function Node:peers()
  self:_check()
  local names = self._sim:peers()
  table.sort(names)
  return names
end

function Cluster:__index(key)
  if type(key) == "number" then
    return rawget(self, "_nodes")[key]
  end
  return Cluster[key]
end

function Cluster:__tostring()
  return string.format("moonroom.testing.cluster(%d, %s%s)", self.n, self.script,
                       self.closed and ", closed" or "")
end

function Cluster:_check_index(i, level)
  if type(i) ~= "number" or i < 1 or i > self.n or i ~= math.floor(i) then
    error(string.format("moonroom.testing: no node %s in a cluster of %d", tostring(i),
                        self.n), level or 3)
  end
end

function Cluster:node(i)
  self:_check_index(i)
  return self._nodes[i]
end

function Cluster:now()
  return self._now
end

local function alive(node)
  return node and not node.closed
end

-- Whether no split keeps nodes i and j apart.
function Cluster:_same_side(i, j)
  local g = self._groups
  return not g or (g[i] ~= nil and g[i] == g[j])
end

-- Whether bytes flow between nodes i and j: both run, on the same side.
function Cluster:_connected(i, j)
  return alive(self._nodes[i]) and alive(self._nodes[j]) and self:_same_side(i, j)
end

-- Starts node i (a fresh server with its cluster) at the cluster's time.
function Cluster:_start(i)
  local args = {}
  for _, a in ipairs(self._args) do
    args[#args + 1] = a
  end
  local cookie = self._cookie
  if type(cookie) == "table" then
    cookie = cookie[i] or DEFAULT_COOKIE
  end
  args[#args + 1] = "--node"
  args[#args + 1] = self._names[i]
  args[#args + 1] = "--cookie"
  args[#args + 1] = tostring(cookie)
  local s, err = sim.new(self.script, args)
  if not s then
    return nil, err
  end
  local ok, why = s:cluster_start()
  if not ok then
    s:free()
    return nil, "cannot start the cluster: " .. tostring(why)
  end
  if self._now then
    s:set_now(self._now)
  else
    self._now = s:now()
  end
  local node = setmetatable({
    script = self.script,
    closed = false,
    index = i,
    name = self._names[i],
    _cluster = self,
    _sim = s,
    _live = {},
    _conns = {},
    _graves = {},
  }, Node)
  self._nodes[i] = node
  -- The heartbeat timer starts with the cluster (mr_link_env_init).
  self._beat[i] = self._now + HEARTBEAT_MS
  return node
end

-- Opens a virtual link between nodes i < j: i dials, j accepts.
function Cluster:_link(i, j)
  local p = {
    i = i, j = j,
    li = self._nodes[i]._sim:link_open(true),
    lj = self._nodes[j]._sim:link_open(false),
    to_j = "", to_i = "", -- bytes of a frame not yet whole, for the counts
  }
  self._pairs[#self._pairs + 1] = p
  self._dirty[i], self._dirty[j] = true, true
end

function Cluster:_find_pair(i, j)
  for _, p in ipairs(self._pairs) do
    if p.i == i and p.j == j then
      return p
    end
  end
end

-- Links every two running, connected nodes that have no link: what the
-- nodes' redialing does in the server.
function Cluster:_mesh()
  for i = 1, self.n do
    for j = i + 1, self.n do
      if self:_connected(i, j) and not self:_find_pair(i, j) then
        self:_link(i, j)
      end
    end
  end
end

-- Counts the frames in bytes that crossed from node a to node b; rest is
-- what an earlier call left of an incomplete frame. Returns the new rest.
function Cluster:_count(a, b, rest, bytes)
  local s = rest .. bytes
  local pos, len = 1, #s
  while len - pos + 1 >= 5 do
    local size = u32(s, pos)
    if len - pos + 1 < 4 + size then
      break
    end
    local name = tag_name(s:byte(pos + 4))
    self._frames[name] = (self._frames[name] or 0) + 1
    local key = a .. ">" .. b
    local dir = self._dir[key]
    if not dir then
      dir = {}
      self._dir[key] = dir
    end
    dir[name] = (dir[name] or 0) + 1
    pos = pos + 4 + size
  end
  return s:sub(pos)
end

-- Moves what both ends of every carrying link queued to the other end, as a
-- network carries what both sides sent at once. Returns the bytes moved.
function Cluster:_carry()
  local moved = 0
  for _, p in ipairs(self._pairs) do
    if p.li and p.lj and self:_connected(p.i, p.j) then
      local si, sj = self._nodes[p.i]._sim, self._nodes[p.j]._sim
      local a, b = si:link_take(p.li), sj:link_take(p.lj)
      if #a > 0 then
        p.to_j = self:_count(p.i, p.j, p.to_j, a)
        sj:link_feed(p.lj, a)
        self._dirty[p.j] = true
      end
      if #b > 0 then
        p.to_i = self:_count(p.j, p.i, p.to_i, b)
        si:link_feed(p.li, b)
        self._dirty[p.i] = true
      end
      moved = moved + #a + #b
    end
  end
  return moved
end

local function end_state(node, idx)
  if not idx or not alive(node) then
    return "closed"
  end
  return (node._sim:link_state(idx))
end

-- Lets go of links that closed. A carrying link one end of which closed is
-- closed at the other end too, as a socket reads the end of the stream; a
-- link across a split or to a vanished node closes each end on its own
-- (heartbeat). Returns whether anything changed.
function Cluster:_reap()
  local changed = false
  local keep = {}
  for _, p in ipairs(self._pairs) do
    local ni, nj = self._nodes[p.i], self._nodes[p.j]
    local ci = end_state(ni, p.li) == "closed"
    local cj = end_state(nj, p.lj) == "closed"
    if (ci or cj) and self:_connected(p.i, p.j) then
      if not ci then
        ni._sim:link_close(p.li, "closed by the peer")
      end
      if not cj then
        nj._sim:link_close(p.lj, "closed by the peer")
      end
      ci, cj = true, true
    end
    if ci and p.li then
      if alive(ni) then
        ni._sim:link_release(p.li)
      end
      p.li, changed = nil, true
      self._dirty[p.i] = true
    end
    if cj and p.lj then
      if alive(nj) then
        nj._sim:link_release(p.lj)
      end
      p.lj, changed = nil, true
      self._dirty[p.j] = true
    end
    if p.li or p.lj then
      keep[#keep + 1] = p
    else
      changed = true
    end
  end
  self._pairs = keep
  -- An orphan (a link to a node that vanished) goes when its heartbeat
  -- closes it, or with its node.
  local orphans = {}
  for _, o in ipairs(self._orphans) do
    if alive(o.node) and o.node._sim:link_state(o.idx) == "closed" then
      o.node._sim:link_release(o.idx)
      changed = true
    elseif alive(o.node) then
      orphans[#orphans + 1] = o
    end
  end
  self._orphans = orphans
  return changed
end

-- Runs until nothing moves: every client has read what its node wrote, and
-- every link has carried what its ends queued.
function Cluster:_settle()
  if self._settling then
    return
  end
  self._settling = true
  local ok, err = pcall(function()
    for _ = 1, 100000 do
      for i = 1, self.n do
        local node = self._nodes[i]
        if self._dirty[i] and alive(node) then
          self._dirty[i] = nil
          Server._pump(node)
        end
      end
      local moved = self:_carry()
      local changed = self:_reap()
      if moved == 0 and not changed and not next(self._dirty) then
        return
      end
      -- Dirty flags of nodes that no longer run mean nothing.
      for i in pairs(self._dirty) do
        if not alive(self._nodes[i]) then
          self._dirty[i] = nil
        end
      end
    end
    kit_error("the simulated cluster did not settle")
  end)
  self._settling = false
  if not ok then
    error(err, 0)
  end
end

function Cluster:settle()
  self:_settle()
end

-- Moves the shared clock ms forward, running on every node, in time order,
-- the script timers and the cluster heartbeat (every HEARTBEAT_MS from the
-- node's start) due in the window, with every node's clock at that time, and
-- settling after each step. Links that closed are redialed at a heartbeat.
function Cluster:advance(ms)
  if type(ms) ~= "number" or ms ~= ms or ms < 0 or ms == math.huge then
    error("bad argument #1 to 'advance' (a finite number of ms >= 0 expected)", 2)
  end
  local target = self._now + math.floor(ms)
  local last, rounds = nil, 0
  while true do
    local t
    for i = 1, self.n do
      local node = self._nodes[i]
      if alive(node) then
        local due = node._sim:timer_due()
        if due and due <= target and (not t or due < t) then
          t = due
        end
        local beat = self._beat[i]
        if beat <= target and (not t or beat < t) then
          t = beat
        end
      end
    end
    if not t then
      break
    end
    rounds = t == last and rounds + 1 or 0
    if rounds > 100000 then
      kit_error("timers keep scheduling timers due at %d ms: advance cannot finish", t)
    end
    last = t
    if t > self._now then
      self._now = t
    end
    for i = 1, self.n do
      local node = self._nodes[i]
      if alive(node) then
        node._sim:set_now(self._now)
      end
    end
    for i = 1, self.n do
      local node = self._nodes[i]
      local due = alive(node) and node._sim:timer_due()
      if due and due <= self._now then
        node._sim:run_timers(self._now)
        self._dirty[i] = true
      end
    end
    self:_settle()
    local beat = false
    for i = 1, self.n do
      local node = self._nodes[i]
      if alive(node) and self._beat[i] <= self._now then
        node._sim:cluster_tick(self._now)
        self._beat[i] = self._beat[i] + HEARTBEAT_MS
        self._dirty[i] = true
        beat = true
      end
    end
    self:_settle()
    if beat then
      self:_mesh()
      self:_settle()
    end
  end
  self._now = target
  for i = 1, self.n do
    local node = self._nodes[i]
    if alive(node) then
      node._sim:set_now(target)
    end
  end
  return target
end

-- Node i is gone. clean: it closed its links (a shutdown), so the nodes it
-- was connected to read the end of the stream at once; else (kill) their
-- ends stay open, orphans, until their own heartbeat finds them silent.
function Cluster:_node_gone(i, clean)
  local keep = {}
  for _, p in ipairs(self._pairs) do
    if p.i == i or p.j == i then
      local other = p.i == i and p.j or p.i
      local oidx = p.i == i and p.lj or p.li
      local onode = self._nodes[other]
      if oidx and alive(onode) then
        if clean and self:_same_side(i, other) then
          onode._sim:link_close(oidx, "closed by the peer")
          onode._sim:link_release(oidx)
        else
          self._orphans[#self._orphans + 1] = { node = onode, idx = oidx }
        end
        self._dirty[other] = true
      end
    else
      keep[#keep + 1] = p
    end
  end
  self._pairs = keep
  self:_settle()
end

-- Node i vanishes (kill -9, a lost machine): its connections just end (the
-- clients see 1006; no on_close runs), and the other nodes notice only when
-- their heartbeat finds the link silent (MR_LINK_SILENT_MS, 5 s).
function Cluster:kill(i)
  self:_check_index(i)
  local node = self._nodes[i]
  if not alive(node) then
    kit_error("node %d is not running", i)
  end
  node._sim:kill()
  node.closed, node.killed = true, true
  for id, conn in pairs(node._live) do
    node._live[id] = nil
    conn:_gone(nil)
  end
  self:_node_gone(i, false)
end

-- A fresh node with the same name, script and options takes node i's place
-- (a node that still runs is killed first) and links to every node it can
-- reach. Returns the new node; c[i] is the new node from then on.
function Cluster:restart(i)
  self:_check_index(i)
  if alive(self._nodes[i]) then
    self:kill(i)
  end
  local node, err = self:_start(i)
  if not node then
    error("moonroom.testing: cannot restart node " .. i .. ": " .. tostring(err), 2)
  end
  self:_mesh()
  self:_settle()
  return node
end

-- split({1}, {2, 3}): links between nodes of different groups stop carrying
-- bytes (a node listed in no group is cut off from all); what the nodes send
-- meanwhile waits, as in a TCP connection, until the heartbeat closes the
-- silent links (5 s).
function Cluster:split(...)
  local groups, seen = {}, {}
  for g, list in ipairs({ ... }) do
    if type(list) ~= "table" then
      error("bad argument #" .. g .. " to 'split' (a list of node numbers expected)", 2)
    end
    for _, i in ipairs(list) do
      self:_check_index(i)
      if seen[i] then
        kit_error("node %d is in two groups", i)
      end
      seen[i], groups[i] = true, g
    end
  end
  self._groups = groups
  self:_settle()
end

-- Ends a split: links that survived it carry what waited; the others, closed
-- by the heartbeat, are redialed at once.
function Cluster:heal()
  self._groups = nil
  for i = 1, self.n do
    self._dirty[i] = true
  end
  self:_settle()
  self:_mesh()
  self:_settle()
end

-- frames() -> { TAG = n, ... }: the frames that crossed the virtual links
-- since the cluster started (or reset_frames), by wire tag name (core/wire.h:
-- "ROOM_TEXT", "PING", ...; an unknown tag as "0x2A").
-- frames(tag) -> n; frames(tag, from, to) -> n sent from node from to node to.
function Cluster:frames(tag, from, to)
  if tag == nil then
    local copy = {}
    for k, v in pairs(self._frames) do
      copy[k] = v
    end
    return copy
  end
  tag = tostring(tag):upper()
  if from == nil then
    return self._frames[tag] or 0
  end
  self:_check_index(from)
  self:_check_index(to)
  local dir = self._dir[from .. ">" .. to]
  return dir and dir[tag] or 0
end

function Cluster:reset_frames()
  self._frames, self._dir = {}, {}
end

-- Closes every running node, one after the other, as a shutdown does.
function Cluster:close()
  if self.closed then
    return
  end
  for i = 1, self.n do
    local node = self._nodes[i]
    if alive(node) then
      node:close()
    end
  end
  self._pairs, self._orphans = {}, {}
  self.closed = true
end

function M.try_cluster(n, script, options)
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    error("bad argument #1 to 'cluster' (a number of nodes >= 1 expected)", 2)
  end
  if type(script) ~= "string" then
    error("bad argument #2 to 'cluster' (script path expected)", 2)
  end
  options = options or {}
  local args, names = {}, {}
  for name in pairs(options) do
    if not CLUSTER_OPTIONS[name] then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local flag = OPTIONS[name]
    if not flag then
      error("moonroom.testing: unknown cluster option '" .. tostring(name)
            .. "' (cookie, names, max_message, max_backpressure, max_head, max_body)", 3)
    end
    args[#args + 1] = flag
    args[#args + 1] = tostring(options[name])
  end
  local node_names = {}
  for i = 1, n do
    node_names[i] = options.names and options.names[i] or ("node" .. i)
  end
  local c = setmetatable({
    n = n,
    script = script,
    closed = false,
    _args = args,
    _names = node_names,
    _cookie = options.cookie or DEFAULT_COOKIE,
    _nodes = {},
    _beat = {},  -- node -> its next heartbeat (ms)
    _pairs = {}, -- the links: { i, j, li, lj, ... }, i < j
    _orphans = {}, -- { node, idx }: ends of links to nodes that vanished
    _groups = nil, -- node -> group while split
    _frames = {},
    _dir = {},
    _dirty = {}, -- nodes whose clients may have something to read
  }, Cluster)
  for i = 1, n do
    local node, err = c:_start(i)
    if not node then
      for k = 1, i - 1 do
        c._nodes[k]._sim:kill()
      end
      return nil, err
    end
  end
  c:_mesh()
  c:_settle()
  return c
end

function M.cluster(n, script, options)
  local c, err = M.try_cluster(n, script, options)
  if not c then
    error("moonroom.testing: cannot load " .. tostring(err), 2)
  end
  return c
end

-- ---- module ------------------------------------------------------------------

function M.try_server(script, options)
  if type(script) ~= "string" then
    error("bad argument #1 to 'server' (script path expected)", 2)
  end
  local args = {}
  local names = {}
  for name in pairs(options or {}) do
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local flag = OPTIONS[name]
    if not flag then
      error("moonroom.testing: unknown server option '" .. tostring(name)
            .. "' (max_message, max_backpressure, max_head, max_body, "
            .. "compression, compression_threshold, compression_level, "
            .. "compression_window, max_connections_per_ip, "
            .. "max_messages_per_second, message_burst, allow_origin)", 3)
    end
    args[#args + 1] = flag
    local value = options[name]
    if value == true or value == false then
      value = value and "on" or "off" -- compression = true
    end
    args[#args + 1] = tostring(value)
  end
  local s, err = sim.new(script, args)
  if not s then
    return nil, err
  end
  return setmetatable({
    script = script,
    closed = false,
    _sim = s,
    _live = {},  -- id -> conn the server still holds
    _conns = {}, -- id -> every conn this server made
    _graves = {},
  }, Server)
end

function M.server(script, options)
  local srv, err = M.try_server(script, options)
  if not srv then
    error("moonroom.testing: cannot load " .. tostring(err), 2)
  end
  return srv
end

M.log_level = sim.log_level

-- Handler errors are worth seeing in a failing spec; info lines are noise.
sim.log_level("error")

return M

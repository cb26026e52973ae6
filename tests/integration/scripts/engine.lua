-- The handler of tests/integration/test_redis_engine.py: every command of
-- cluster.lua (join, leave, bcast, bcastx, bbin, big, bigbin, count, node,
-- stats, ...; see its header) plus presence and cluster-wide counts:
--   /?room=R[&name=N]  joins R on connect (and tracks it as N when given)
--   track:R:NAME       -> "tracked:R" (meta {name = NAME}) or "refused:ERR"
--   untrack:R          -> "untracked:true|false"
--   ccount:R           -> "ccount:LOCAL:CLUSTER"
--   presence:R         -> JSON list of {node, id, name}
--   events:R           -> JSON {calls, joins, leaves} since the last events:R
--   engine             -> JSON of the engine counters (engine_* in ws.stats())
-- Replies never start with "M|", so test_cluster.Client tells them from the
-- broadcasts the tests send.
local ws = require "moonroom"
local base = require "cluster"
local json = ws.json

local events = {}

local function brief(list)
  local out = {}
  for i, e in ipairs(list) do
    out[i] = { node = e.node, id = e.id, name = e.meta.name or json.null }
  end
  return out
end

local function record(room)
  local r = events[room]
  if not r then
    r = { calls = 0, joins = {}, leaves = {} }
    events[room] = r
  end
  return r
end

local H = {}

function H.on_connect(conn, req)
  local room = req.query.room
  if room then
    ws.join(conn, room)
    if req.query.name then
      assert(ws.track(conn, room, { name = req.query.name }))
    end
  end
end

function H.on_message(conn, msg, is_binary)
  if is_binary then return base.on_message(conn, msg, is_binary) end
  local cmd, a, b = msg:match("^(%w+):?([^:]*):?(.*)$")
  if cmd == "track" then
    local ok, err = ws.track(conn, a, { name = b })
    conn:send(ok and ("tracked:" .. a) or ("refused:" .. tostring(err)))
  elseif cmd == "untrack" then
    conn:send("untracked:" .. tostring(ws.untrack(conn, a)))
  elseif cmd == "ccount" then
    conn:send(("ccount:%d:%d"):format(ws.count(a), ws.count(a, "cluster")))
  elseif cmd == "presence" then
    conn:send(json.encode(brief(ws.presence(a))))
  elseif cmd == "events" then
    local r = record(a)
    events[a] = nil
    conn:send(json.encode(r))
  elseif cmd == "engine" then
    local out = {}
    for k, v in pairs(ws.stats()) do
      if k:match("^engine_") then out[k] = v end
    end
    conn:send(json.encode(out))
  else
    return base.on_message(conn, msg, is_binary)
  end
end

function H.on_presence(room, joins, leaves)
  local r = record(room)
  r.calls = r.calls + 1
  for _, e in ipairs(brief(joins)) do r.joins[#r.joins + 1] = e end
  for _, e in ipairs(brief(leaves)) do r.leaves[#r.leaves + 1] = e end
end

return H

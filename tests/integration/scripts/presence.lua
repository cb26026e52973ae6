-- The handler of tests/integration/test_presence.py: cluster-wide counts
-- and presence driven by text commands, and a record of on_presence calls.
--   /?room=R&name=N   joins R and tracks the connection there (storms)
--   join:R  leave:R  track:R:NAME  untrack:R
--   count:R       -> "count:LOCAL:CLUSTER"
--   presence:R    -> JSON list of {node, id, name}
--   events:R      -> JSON {calls = n, joins = [...], leaves = [...]}, since
--                    the last events:R
--   stats         -> JSON of the presence counters
local ws = require "moonroom"
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

return {
  on_connect = function(conn, req)
    local room = req.query.room
    if room then
      ws.join(conn, room)
      assert(ws.track(conn, room, { name = req.query.name or "anon" }))
    end
  end,

  on_message = function(conn, msg)
    local cmd, a, b = msg:match("^(%w+):?([^:]*):?(.*)$")
    if cmd == "join" then
      ws.join(conn, a)
      conn:send("joined:" .. a)
    elseif cmd == "leave" then
      ws.leave(conn, a)
      conn:send("left:" .. a)
    elseif cmd == "track" then
      local ok, err = ws.track(conn, a, { name = b, n = #b, here = true })
      conn:send(ok and ("tracked:" .. a) or ("refused:" .. err))
    elseif cmd == "untrack" then
      conn:send("untracked:" .. tostring(ws.untrack(conn, a)))
    elseif cmd == "count" then
      conn:send(("count:%d:%d"):format(ws.count(a), ws.count(a, "cluster")))
    elseif cmd == "presence" then
      conn:send(json.encode(brief(ws.presence(a))))
    elseif cmd == "events" then
      local r = record(a)
      events[a] = nil
      conn:send(json.encode({ calls = r.calls, joins = r.joins, leaves = r.leaves }))
    elseif cmd == "stats" then
      local s = ws.stats()
      conn:send(json.encode({
        counts_out = s.cluster_counts_out, counts_in = s.cluster_counts_in,
        presence_out = s.cluster_presence_out, presence_in = s.cluster_presence_in,
        resyncs = s.presence_resyncs, drops = s.presence_node_drops,
        refused = s.presence_refused, events = s.presence_events,
      }))
    elseif cmd == "node" then
      conn:send(ws.node())
    else
      conn:send("unknown")
    end
  end,

  on_presence = function(room, joins, leaves)
    local r = record(room)
    r.calls = r.calls + 1
    for _, e in ipairs(brief(joins)) do r.joins[#r.joins + 1] = e end
    for _, e in ipairs(brief(leaves)) do r.leaves[#r.leaves + 1] = e end
  end,
}

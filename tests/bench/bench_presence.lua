-- The presence benchmark's handler (tests/bench/run.py, scenarios
-- presence-1k and presence-10k): every connection joins ?room= and is
-- tracked there in on_connect, and GET /?room=R&n=N on the listen port
-- answers what this node sees: its local and cluster-wide count, the
-- number of presence entries once the cluster count has reached N (the
-- list is only built then: it costs O(N)), and the frame counters.
local ws = require "moonroom"

return {
  on_connect = function(conn, req)
    local room = req.query.room
    if room then
      ws.join(conn, room)
      assert(ws.track(conn, room, { name = req.query.name or "" }))
    end
  end,

  on_http = function(req)
    local room = req.query.room or "storm"
    local want = tonumber(req.query.n) or 0
    local cluster = ws.count(room, "cluster")
    local s = ws.stats()
    return 200, ws.json.encode({
      node = ws.node(),
      peers = #ws.peers(),
      here = ws.count(room),
      cluster = cluster,
      presence = (want > 0 and cluster >= want) and #ws.presence(room) or -1,
      counts_out = s.cluster_counts_out,
      presence_out = s.cluster_presence_out,
    }), { ["Content-Type"] = "application/json" }
  end,
}

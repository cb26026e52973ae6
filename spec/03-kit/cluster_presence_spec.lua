-- Cluster-wide counts and presence (issue 11) on the kit's simulated
-- cluster: the real core on every node, the real COUNTS and PRESENCE frames
-- on the virtual links, batches driven by the shared clock.
local testing = require "moonroom.testing"

local SCRIPT = "spec/fixtures/presence.lua"
-- core/presence.h: changes wait at most this long before they are sent.
local BATCH_MS = 50
-- core/link.h: a link silent for 5 s is dropped at the next heartbeat.
local SILENT_MS, HEARTBEAT_MS = 5000, 1000

-- One batch on the sending node, then one on the receiving node: long enough
-- for every node to have sent, applied and reported what changed.
local function converge(c)
  c:advance(2 * BATCH_MS)
end

local function ask(conn, what)
  conn:send(what)
  return conn:next()
end

-- What ws.presence(room) and ws.count(room[, "cluster"]) say on node i.
local function view(c, i, room)
  local probe = c[i]:connect("/?room=" .. room .. "&track=0")
  local p = ask(probe, "presence")
  local n = ask(probe, "count")
  probe:close()
  return p, n
end

describe("presence and counts on testing.cluster", function()
  local c

  after_each(function()
    if c then
      c:close()
      c = nil
    end
  end)

  it("counts converge on every node after joins, leaves and closes", function()
    c = testing.cluster(3, SCRIPT)
    local ada = c[1]:connect("/?room=lobby&name=ada&track=0")
    c[1]:connect("/?room=lobby&name=amy&track=0")
    local bob = c[2]:connect("/?room=lobby&name=bob&track=0")
    local cat = c[3]:connect("/?room=kitchen&name=cat&track=0")
    -- Local counts are exact at once; the others' arrive with the batch.
    assert.equals("count 2 2", ask(ada, "count"))
    converge(c)
    assert.equals("count 2 3", ask(ada, "count"))
    assert.equals("count 1 3", ask(bob, "count"))
    cat:send("leave")
    assert.equals("ok", cat:next())
    local cat2 = c[3]:connect("/?room=lobby&name=cat2&track=0")
    converge(c)
    assert.equals("count 1 4", ask(cat2, "count"))
    assert.equals("count 2 4", ask(ada, "count"))
    bob:close()
    converge(c)
    assert.equals("count 2 3", ask(ada, "count"))
    assert.equals("count 1 3", ask(cat2, "count"))
  end)

  it("presence converges on every node after joins, meta updates, untracks and closes", function()
    c = testing.cluster(3, SCRIPT)
    local ada = c[1]:connect("/?room=lobby&name=ada")
    local bob = c[2]:connect("/?room=lobby&name=bob&status=away")
    c[3]:connect("/?room=lobby&name=cat")
    converge(c)
    local all = "presence node1/ada/here,node2/bob/away,node3/cat/here"
    for i = 1, 3 do
      assert.equals(all, (view(c, i, "lobby")))
    end
    bob:send("status back")
    assert.equals("ok", bob:next())
    converge(c)
    for i = 1, 3 do
      assert.equals("presence node1/ada/here,node2/bob/back,node3/cat/here", (view(c, i, "lobby")))
    end
    ada:send("untrack")
    assert.equals("untracked true", ada:next())
    bob:close()
    converge(c)
    for i = 1, 3 do
      assert.equals("presence node3/cat/here", (view(c, i, "lobby")))
    end
  end)

  it("reports joins and leaves anywhere to on_presence on the nodes with members", function()
    c = testing.cluster(3, SCRIPT)
    local w1 = c[1]:connect("/?room=lobby&name=w1&track=0&watch=1")
    local w3 = c[3]:connect("/?room=lobby&name=w3&track=0&watch=1")
    local bob = c[2]:connect("/?room=lobby&name=bob")
    c[2]:connect("/?room=lobby&name=bea")
    converge(c)
    assert.same({ "on_presence lobby +node2/bea +node2/bob" }, w1:messages())
    assert.same({ "on_presence lobby +node2/bea +node2/bob" }, w3:messages())
    -- A meta update is a leave of the old entry and a join of the new.
    bob:send("status busy")
    converge(c)
    assert.same({ "on_presence lobby +node2/bob -node2/bob" }, w1:messages())
    assert.same({ "on_presence lobby +node2/bob -node2/bob" }, w3:messages())
    bob:close()
    converge(c)
    assert.same({ "on_presence lobby -node2/bob" }, w1:messages())
    assert.same({ "on_presence lobby -node2/bob" }, w3:messages())
  end)

  it("removes a killed node's entries and counts, with leaves, after the heartbeat timeout", function()
    c = testing.cluster(3, SCRIPT)
    local w1 = c[1]:connect("/?room=lobby&name=w1&track=0&watch=1")
    c[2]:connect("/?room=lobby&name=bob")
    c[2]:connect("/?room=lobby&name=bea")
    c[3]:connect("/?room=lobby&name=cat")
    converge(c)
    w1:messages()
    c:kill(2)
    converge(c)
    -- Nothing is known yet: node 2 just went quiet.
    assert.equals("presence node2/bea/here,node2/bob/here,node3/cat/here", (view(c, 1, "lobby")))
    c:advance(SILENT_MS + HEARTBEAT_MS)
    assert.same({ "node3" }, c[1]:peers())
    assert.same({ "on_presence lobby -node2/bea -node2/bob" }, w1:messages())
    for _, i in ipairs { 1, 3 } do
      local p, n = view(c, i, "lobby")
      assert.equals("presence node3/cat/here", p)
      assert.matches(" 3$", n) -- w1, cat and the probe itself
    end
  end)

  it("resyncs a restarted node from a full state exchange", function()
    c = testing.cluster(3, SCRIPT)
    c[1]:connect("/?room=lobby&name=ada")
    c[2]:connect("/?room=lobby&name=bob")
    c[3]:connect("/?room=lobby&name=cat")
    converge(c)
    c:kill(2)
    c:advance(SILENT_MS + HEARTBEAT_MS)
    local n2 = c:restart(2)
    local watcher = n2:connect("/?room=lobby&name=w2&track=0&watch=1")
    local bea = n2:connect("/?room=lobby&name=bea")
    converge(c)
    for i = 1, 3 do
      local p, n = view(c, i, "lobby")
      assert.equals("presence node1/ada/here,node2/bea/here,node3/cat/here", p)
      assert.matches(" 5$", n) -- ada, w2, bea, cat and the probe
    end
    local seen = table.concat(watcher:messages(), "\n")
    assert.matches("%+node1/ada", seen)
    assert.matches("%+node3/cat", seen)
    -- The restarted node's own new member, too; and bea herself is open.
    assert.matches("%+node2/bea", seen)
    assert.is_false(bea.closed)
  end)

  it("heals a split: each side sees its own, then every node sees all", function()
    c = testing.cluster(3, SCRIPT)
    c[1]:connect("/?room=lobby&name=ada")
    c[2]:connect("/?room=lobby&name=bob")
    c[3]:connect("/?room=lobby&name=cat")
    converge(c)
    c:split({ 1 }, { 2, 3 })
    c:advance(SILENT_MS + HEARTBEAT_MS)
    assert.equals("presence node1/ada/here", (view(c, 1, "lobby")))
    assert.equals("presence node2/bob/here,node3/cat/here", (view(c, 2, "lobby")))
    -- Changes on one side during the split reach the other after the heal.
    c[1]:connect("/?room=lobby&name=amy")
    c:heal()
    converge(c)
    for i = 1, 3 do
      assert.equals("presence node1/ada/here,node1/amy/here,node2/bob/here,node3/cat/here",
                    (view(c, i, "lobby")))
    end
  end)

  describe("a join storm", function()
    local JOINS = 1000

    it("of 1,000 joins at one instant crosses each link in one batch", function()
      c = testing.cluster(3, SCRIPT)
      c:reset_frames()
      for k = 1, JOINS do
        c[k % 3 + 1]:connect("/?room=lobby&name=u" .. k)
      end
      converge(c)
      local p, n = view(c, 1, "lobby")
      assert.equals(JOINS, select(2, p:gsub("node%d/u%d+/here", "")))
      -- Node 1 has every third joiner (333) and the probe.
      assert.equals("count 334 " .. (JOINS + 1), n)
      -- One flush per node, each one batch per link: 6 directed links. A
      -- batch that outgrows one frame (MR_PRESENCE_FRAME_BUDGET, 60,000
      -- bytes) would add some; these ~334 entries of ~40 bytes do not.
      assert.is_true(c:frames("PRESENCE") <= 6, c:frames("PRESENCE") .. " PRESENCE frames")
      assert.is_true(c:frames("COUNTS") <= 6, c:frames("COUNTS") .. " COUNTS frames")
    end)

    it("of 1,000 joins over a second makes at most one batch per link per 50 ms", function()
      c = testing.cluster(3, SCRIPT)
      c:reset_frames()
      for k = 1, JOINS do
        c[k % 3 + 1]:connect("/?room=lobby&name=u" .. k)
        c:advance(1)
      end
      converge(c)
      for i = 1, 3 do
        local p = view(c, i, "lobby")
        assert.equals(JOINS, select(2, p:gsub("node%d/u%d+/here", "")))
      end
      -- 1,100 ms in all: each node flushes at most once per BATCH_MS, and
      -- each flush sends one PRESENCE frame per link (2 links per node).
      local bound = 3 * 2 * (math.ceil((JOINS + 2 * BATCH_MS) / BATCH_MS) + 1)
      local sent = c:frames("PRESENCE")
      assert.is_true(sent <= bound, sent .. " PRESENCE frames, bound " .. bound)
      assert.is_true(sent < JOINS / 4, sent .. " PRESENCE frames for " .. JOINS .. " joins")
    end)

    it("sends nothing while nothing changes", function()
      c = testing.cluster(3, SCRIPT)
      c[1]:connect("/?room=lobby&name=ada")
      converge(c)
      c:reset_frames()
      c:advance(10 * HEARTBEAT_MS)
      assert.equals(0, c:frames("PRESENCE"))
      assert.equals(0, c:frames("COUNTS"))
    end)
  end)
end)

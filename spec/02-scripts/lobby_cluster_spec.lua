-- scripts/lobby.lua on a simulated cluster (testing.cluster): the real core
-- on every node, the real PRESENCE, COUNTS and ROOM_TEXT frames on the
-- virtual links, and one frozen clock (c:advance runs the presence batches,
-- the countdown's timers and the heartbeat; nothing sleeps). Players on
-- different nodes share one room: one roster, one room limit, and exactly
-- one countdown, run by the room's leader (the smallest node name with
-- players in the room).
local testing = require "moonroom.testing"
local cjson = require "cjson"

local TOKEN = "lobby-dev-token"
-- core/presence.h: a change reaches the other nodes in the next batch, at
-- most 50 ms later; one batch out and one to report it is 100 ms.
local BATCH_MS = 50
-- core/link.h: a killed node is dropped within 5 s of silence plus a beat.
local SILENT_MS, HEARTBEAT_MS = 5000, 1000

describe("scripts/lobby.lua on a cluster", function()
  local c, level

  setup(function()
    -- Every node warns once at load that LOBBY_TOKEN is unset.
    level = testing.log_level("off")
  end)

  teardown(function()
    testing.log_level(level)
  end)

  after_each(function()
    if c then
      c:close()
      c = nil
    end
  end)

  local function converge()
    c:advance(2 * BATCH_MS)
  end

  local function send(p, msg)
    p:send(cjson.encode(msg))
  end

  -- Every JSON message a client has received since the last call.
  local function inbox(p)
    local out = {}
    for _, m in ipairs(p:messages()) do
      out[#out + 1] = cjson.decode(m)
    end
    return out
  end

  local function types(msgs)
    local out = {}
    for _, m in ipairs(msgs) do
      out[#out + 1] = m.type == "countdown" and "countdown " .. m.seconds
        or m.type == "presence" and "presence " .. m.event .. " " .. m.name
        or m.type
    end
    return out
  end

  local function names(players)
    local out = {}
    for i, p in ipairs(players) do
      out[i] = p.name .. (p.ready and "+" or "")
    end
    return table.concat(out, ",")
  end

  -- Splits a list of types into the presence messages, sorted (a node
  -- hears of its own players' changes before the other nodes'), and the
  -- others, in order.
  local function split(list)
    local shown, rest = {}, {}
    for _, t in ipairs(list) do
      local into = t:find("^presence ") and shown or rest
      into[#into + 1] = t
    end
    table.sort(shown)
    return shown, rest
  end

  -- The roster in the last presence message of msgs.
  local function last_roster(msgs)
    for i = #msgs, 1, -1 do
      if msgs[i].type == "presence" then
        return names(msgs[i].players)
      end
    end
  end

  -- A player on node i, welcomed, in room r1 (with the batch settled).
  local function player(i, name, room)
    local p = c[i]:connect("/?token=" .. TOKEN .. "&name=" .. name)
    assert.equals("welcome", cjson.decode(p:next()).type)
    send(p, { type = "join", room = room or "r1" })
    return p
  end

  -- ada on node 1 and bob on node 2 in r1, both ready: node 1 leads the
  -- countdown, which has just begun.
  local function ready_pair()
    local ada, bob = player(1, "ada"), player(2, "bob")
    converge()
    send(ada, { type = "ready", ready = true })
    send(bob, { type = "ready", ready = true })
    converge()
    local a, b = inbox(ada), inbox(bob)
    assert.equals("countdown 3", types(a)[#a])
    assert.equals("countdown 3", types(b)[#b])
    return ada, bob
  end

  it("shows players on every node one roster with everyone, each change once", function()
    c = testing.cluster(3, "scripts/lobby.lua")
    local ada, bob = player(1, "ada"), player(2, "bob")
    converge()
    local cat = player(3, "cat")
    -- cat's own node tells cat at once, with the roster it knows from the
    -- other nodes; they tell theirs within a batch.
    local m = inbox(cat)
    assert.same({ "presence join cat" }, types(m))
    assert.equals("ada,bob,cat", last_roster(m))
    converge()
    for _, p in ipairs({ ada, bob }) do
      m = inbox(p)
      assert.equals("presence join cat", types(m)[#m])
      assert.equals("ada,bob,cat", last_roster(m))
    end
    send(bob, { type = "ready", ready = true })
    converge()
    -- Each client hears of bob's ready exactly once, whatever its node.
    for _, p in ipairs({ ada, bob, cat }) do
      local m = inbox(p)
      assert.same({ "presence ready bob" }, types(m))
      assert.equals("ada,bob+,cat", names(m[1].players))
    end
    cat:close()
    converge()
    for _, p in ipairs({ ada, bob }) do
      local m = inbox(p)
      assert.same({ "presence leave cat" }, types(m))
      assert.equals("ada,bob+", names(m[1].players))
    end
  end)

  it("starts exactly one countdown when players on two nodes are ready, and runs it again", function()
    c = testing.cluster(2, "scripts/lobby.lua")
    local ada, bob = player(1, "ada"), player(2, "bob")
    converge()
    inbox(ada)
    inbox(bob)
    c:reset_frames()
    -- Both ready in the same instant: each node sees the other's ready one
    -- batch later, and only node 1 (the leader) starts.
    send(ada, { type = "ready", ready = true })
    send(bob, { type = "ready", ready = true })
    converge()
    c:advance(3000)
    for _, p in ipairs({ ada, bob }) do
      local m = inbox(p)
      local shown, rest = split(types(m))
      assert.same({ "presence ready ada", "presence ready bob" }, shown)
      assert.same({ "countdown 3", "countdown 2", "countdown 1", "start" }, rest)
      assert.equals("ada,bob", names(m[#m].players))
    end
    -- Four messages from node 1 (3, 2, 1, start); none from node 2.
    assert.equals(4, c:frames("ROOM_TEXT", 1, 2))
    assert.equals(0, c:frames("ROOM_TEXT", 2, 1))
    -- Everyone is unready on both nodes: nothing is shown for the catch-up
    -- and nothing restarts.
    c:advance(5000)
    assert.same({}, inbox(ada))
    assert.same({}, inbox(bob))
    -- The next round needs everyone ready again, and then it starts again.
    send(bob, { type = "ready", ready = true })
    converge()
    assert.same({ "presence ready bob" }, types(inbox(ada)))
    send(ada, { type = "ready", ready = true })
    converge()
    c:advance(3000)
    -- ada's ready starts the countdown on node 1 at once: bob may see the
    -- countdown (a broadcast) before ada's ready (the next batch).
    local shown, rest = split(types(inbox(bob)))
    assert.same({ "presence ready ada", "presence ready bob" }, shown)
    assert.same({ "countdown 3", "countdown 2", "countdown 1", "start" }, rest)
  end)

  it("leaves every node's players unready after a start, even when the leader's players go", function()
    c = testing.cluster(3, "scripts/lobby.lua")
    local ada, bob, cat = player(1, "ada"), player(2, "bob"), player(3, "cat")
    converge()
    for _, p in ipairs({ ada, bob, cat }) do
      send(p, { type = "ready", ready = true })
    end
    converge()
    c:advance(3000)
    for _, p in ipairs({ bob, cat }) do
      local m = inbox(p)
      assert.equals("start", m[#m].type)
      assert.equals("ada,bob,cat", names(m[#m].players))
    end
    converge()
    assert.same({}, inbox(bob))
    assert.same({}, inbox(cat))
    -- Node 1 moved the room to the next round when it started; nodes 2 and
    -- 3 caught up, so its players going does not make theirs ready again.
    ada:close()
    converge()
    c:advance(5000)
    for _, p in ipairs({ bob, cat }) do
      local m = inbox(p)
      assert.same({ "presence leave ada" }, types(m))
      assert.equals("bob,cat", names(m[1].players))
    end
  end)

  it("is led by the smallest node name with players in the room", function()
    c = testing.cluster(3, "scripts/lobby.lua")
    local bob, cat = player(3, "bob"), player(2, "cat")
    converge()
    inbox(bob)
    c:reset_frames()
    send(bob, { type = "ready", ready = true })
    send(cat, { type = "ready", ready = true })
    converge()
    local _, rest = split(types(inbox(bob)))
    assert.same({ "countdown 3" }, rest)
    assert.equals(1, c:frames("ROOM_TEXT", 2, 3))
    assert.equals(0, c:frames("ROOM_TEXT", 3, 2))
  end)

  it("is cancelled once by a leave, a join or an unready on another node", function()
    c = testing.cluster(3, "scripts/lobby.lua")
    local ada, bob = ready_pair()
    -- bob (node 2) is no longer ready: the leader, node 1, cancels.
    send(bob, { type = "ready", ready = false })
    converge()
    local m = inbox(ada)
    assert.same({ "cancelled", "presence ready bob" }, types(m))
    assert.equals("bob is not ready", m[1].reason)
    assert.same({ "presence ready bob", "cancelled" }, types(inbox(bob)))
    c:advance(5000)
    assert.same({}, inbox(ada))
    -- Ready again; then cat joins on node 3.
    send(bob, { type = "ready", ready = true })
    converge()
    assert.same({ "presence ready bob", "countdown 3" }, types(inbox(ada)))
    local cat = player(3, "cat")
    converge()
    m = inbox(ada)
    assert.same({ "cancelled", "presence join cat" }, types(m))
    assert.equals("cat joined", m[1].reason)
    -- cat hears the cancellation (broadcast) once, too.
    local _, rest = split(types(inbox(cat)))
    assert.same({ "cancelled" }, rest)
    local shown
    shown, rest = split(types(inbox(bob)))
    assert.same({ "presence join cat", "presence ready bob" }, shown)
    assert.same({ "countdown 3", "cancelled" }, rest)
    -- cat leaves: ada and bob are still ready, so the countdown starts again.
    send(cat, { type = "leave" })
    converge()
    assert.same({ "presence leave cat", "countdown 3" }, types(inbox(bob)))
    inbox(ada)
    -- bob leaves on node 2.
    send(bob, { type = "leave" })
    converge()
    m = inbox(ada)
    assert.same({ "cancelled", "presence leave bob" }, types(m))
    assert.equals("bob left", m[1].reason)
    c:advance(5000)
    assert.same({}, inbox(ada))
    assert.equals(0, c[1]:stats().timers)
  end)

  it("is cancelled for the other nodes when the leader's last player closes", function()
    c = testing.cluster(2, "scripts/lobby.lua")
    local ada, bob = ready_pair()
    ada:close()
    converge()
    local m = inbox(bob)
    assert.same({ "cancelled", "presence leave ada" }, types(m))
    assert.equals("ada left", m[1].reason)
    c:advance(5000)
    assert.same({}, inbox(bob))
    assert.equals(0, c[1]:stats().timers)
  end)

  it("keeps a room to 8 players across the nodes", function()
    c = testing.cluster(2, "scripts/lobby.lua")
    for k = 1, 8 do
      player(k % 2 + 1, "p" .. k)
    end
    converge()
    for i = 1, 2 do
      local late = player(i, "late" .. i)
      local m = inbox(late)
      assert.same({ "error" }, types(m))
      assert.equals("room r1 is full (8 players)", m[1].error)
      -- The room list counts every node's players.
      send(late, { type = "rooms" })
      assert.same({ { name = "r1", count = 8 } }, inbox(late)[1].rooms)
    end
    assert.equals(4, #c[1]:members("r1"))
    assert.equals(4, #c[2]:members("r1"))
  end)

  it("drops a killed node's players from the roster after the heartbeat timeout", function()
    c = testing.cluster(3, "scripts/lobby.lua")
    local ada = player(1, "ada")
    player(2, "bob")
    player(2, "bea")
    local cat = player(3, "cat")
    converge()
    assert.equals("ada,bea,bob,cat", last_roster(inbox(ada)))
    inbox(cat)
    c:kill(2)
    c:advance(SILENT_MS + HEARTBEAT_MS)
    for _, p in ipairs({ ada, cat }) do
      local m = inbox(p)
      assert.same({ "presence leave bea", "presence leave bob" }, (split(types(m))))
      assert.equals("ada,cat", names(m[2].players))
    end
  end)

  it("keeps a running countdown across a reload of the leader", function()
    c = testing.cluster(2, "scripts/lobby.lua")
    local ada, bob = ready_pair()
    c:advance(1000)
    assert.same({ "countdown 2" }, types(inbox(bob)))
    assert.is_true(c[1]:reload())
    c:advance(2000)
    assert.same({ "countdown 1", "start" }, types(inbox(bob)))
    assert.same({ "countdown 2", "countdown 1", "start" }, types(inbox(ada)))
  end)
end)

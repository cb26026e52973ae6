-- scripts/lobby.lua through the busted kit: the real core, real frames, and
-- simulated time (srv:advance runs the countdown's timers; nothing sleeps).
-- LOBBY_TOKEN is not set here, so the lobby accepts its development token.
local testing = require "moonroom.testing"
local cjson = require "cjson"

local TOKEN = "lobby-dev-token"

describe("scripts/lobby.lua", function()
  local srv, level

  setup(function()
    -- The script warns once at load that LOBBY_TOKEN is unset.
    level = testing.log_level("off")
  end)

  teardown(function()
    testing.log_level(level)
  end)

  before_each(function()
    srv = testing.server("scripts/lobby.lua")
  end)

  after_each(function()
    srv:close()
  end)

  -- A connected player whose welcome has been read; returns conn, welcome.
  local function player(name)
    local c = srv:connect("/?token=" .. TOKEN .. "&name=" .. name)
    local welcome = cjson.decode(c:next())
    return c, welcome
  end

  local function send(c, msg)
    c:send(cjson.encode(msg))
  end

  -- Every JSON message a client has received since the last call.
  local function inbox(c)
    local out = {}
    for _, m in ipairs(c:messages()) do
      out[#out + 1] = cjson.decode(m)
    end
    return out
  end

  local function types(msgs)
    local out = {}
    for _, m in ipairs(msgs) do
      out[#out + 1] = m.type == "countdown" and "countdown " .. m.seconds
        or m.type
    end
    return out
  end

  -- Two players in room r1, both ready: the countdown has begun.
  local function ready_pair()
    local ada = player("ada")
    local bob = player("bob")
    send(ada, { type = "join", room = "r1" })
    send(bob, { type = "join", room = "r1" })
    send(ada, { type = "ready", ready = true })
    send(bob, { type = "ready", ready = true })
    inbox(ada)
    inbox(bob)
    return ada, bob
  end

  describe("connecting", function()
    it("refuses a missing or wrong token with 401 and a WWW-Authenticate header", function()
      local conn, status, body, response = srv:try_connect("/?name=ada")
      assert.is_nil(conn)
      assert.equals(401, status)
      assert.equals("missing or wrong token", body)
      assert.matches("Bearer", response.headers["www-authenticate"])
      local _, status2 = srv:try_connect("/?token=nope&name=ada")
      assert.equals(401, status2)
    end)

    it("refuses a name that is empty, too long or not UTF-8", function()
      for _, name in ipairs({ "", string.rep("x", 25), "%FF" }) do
        local conn, status = srv:try_connect("/?token=" .. TOKEN .. "&name=" .. name)
        assert.is_nil(conn)
        assert.equals(400, status)
      end
    end)

    it("welcomes a player with its id and the room list", function()
      local _, w = player("ada")
      assert.equals("welcome", w.type)
      assert.equals("ada", w.name)
      assert.is_number(w.id)
    end)
  end)

  describe("rooms", function()
    it("lists the rooms with their member counts", function()
      local ada = player("ada")
      local bob = player("bob")
      local cat = player("cat")
      send(ada, { type = "join", room = "r1" })
      send(bob, { type = "join", room = "r1" })
      send(cat, { type = "join", room = "r2" })
      inbox(cat)
      send(cat, { type = "rooms" })
      local msgs = inbox(cat)
      assert.same({ { name = "r1", count = 2 }, { name = "r2", count = 1 } },
        msgs[1].rooms)
    end)

    it("announces joins and leaves with the roster, and a player is in one room", function()
      local ada = player("ada")
      local bob = player("bob")
      send(ada, { type = "join", room = "r1" })
      send(bob, { type = "join", room = "r1" })
      local m = inbox(ada)
      assert.same({ "presence", "presence" }, types(m))
      assert.same({ { name = "ada", ready = false }, { name = "bob", ready = false } },
        m[2].players)
      send(bob, { type = "join", room = "r2" })
      m = inbox(ada)
      assert.equals("leave", m[1].event)
      assert.same({ { name = "ada", ready = false } }, m[1].players)
      assert.same({ ada.id }, srv:members("r1"))
      assert.same({ bob.id }, srv:members("r2"))
    end)

    it("keeps the roster in the room's state, gone when the room empties", function()
      local ada = player("ada")
      send(ada, { type = "join", room = "r1" })
      send(ada, { type = "leave" })
      assert.same({}, srv:room_names())
      send(ada, { type = "join", room = "r1" })
      local m = inbox(ada)
      assert.same({ { name = "ada", ready = false } }, m[#m].players)
    end)

    it("answers bad input with an error and keeps the connection", function()
      local ada = player("ada")
      ada:send("{not json")
      ada:send('{"type":"fly"}')
      send(ada, { type = "ready", ready = true })
      send(ada, { type = "join", room = "" })
      local m = inbox(ada)
      assert.same({ "error", "error", "error", "error" }, types(m))
      assert.matches("unknown type fly", m[2].error)
      assert.equals("join a room first", m[3].error)
      assert.equals("open", ada.state)
    end)
  end)

  describe("the countdown", function()
    it("starts when everyone is ready and ticks every second to start", function()
      local ada = player("ada")
      local bob = player("bob")
      send(ada, { type = "join", room = "r1" })
      send(bob, { type = "join", room = "r1" })
      send(ada, { type = "ready", ready = true })
      assert.equals(0, srv:stats().timers)
      send(bob, { type = "ready", ready = true })
      local m = inbox(ada)
      assert.equals("countdown 3", types(m)[#m])
      inbox(bob)
      srv:advance(999)
      assert.same({}, inbox(ada))
      srv:advance(1)
      assert.same({ "countdown 2" }, types(inbox(ada)))
      srv:advance(1000)
      assert.same({ "countdown 1" }, types(inbox(ada)))
      srv:advance(1000)
      local last = inbox(ada)
      assert.same({ "start" }, types(last))
      assert.same({ "countdown 2", "countdown 1", "start" }, types(inbox(bob)))
      -- Everyone is unready again, and no timer is left behind.
      assert.same({ { name = "ada", ready = false }, { name = "bob", ready = false } },
        last[1].players)
      srv:advance(5000)
      assert.same({}, inbox(ada))
      assert.equals(0, srv:stats().timers)
    end)

    it("does not start for a player alone", function()
      local ada = player("ada")
      send(ada, { type = "join", room = "r1" })
      send(ada, { type = "ready", ready = true })
      srv:advance(5000)
      assert.same({ "presence", "presence" }, types(inbox(ada)))
    end)

    it("is cancelled when someone leaves", function()
      local ada, bob = ready_pair()
      srv:advance(1000)
      inbox(ada)
      send(bob, { type = "leave" })
      local m = inbox(ada)
      assert.same({ "cancelled", "presence" }, types(m))
      assert.equals("bob left", m[1].reason)
      srv:advance(5000)
      assert.same({}, inbox(ada))
      assert.equals(0, srv:stats().timers)
    end)

    it("starts again when a player leaves and the two or more left are all ready", function()
      local ada, bob = ready_pair()
      local cat = player("cat")
      send(cat, { type = "join", room = "r1" })
      send(cat, { type = "ready", ready = true })
      assert.same({ "cancelled", "presence", "presence", "countdown 3" }, types(inbox(ada)))
      inbox(bob)
      send(cat, { type = "ready", ready = false })
      send(cat, { type = "leave" })
      local m = inbox(bob)
      assert.same({ "cancelled", "presence", "presence", "countdown 3" }, types(m))
      assert.equals("cat is not ready", m[1].reason)
      assert.equals("leave", m[3].event)
      inbox(ada)
      srv:advance(3000)
      assert.same({ "countdown 2", "countdown 1", "start" }, types(inbox(ada)))
    end)

    it("is cancelled when someone disconnects", function()
      local ada, bob = ready_pair()
      bob:close()
      assert.same({ "cancelled", "presence" }, types(inbox(ada)))
      srv:advance(5000)
      assert.same({}, inbox(ada))
    end)

    it("is cancelled when someone is no longer ready, or a new player joins", function()
      local ada, bob = ready_pair()
      send(bob, { type = "ready", ready = false })
      assert.same({ "cancelled", "presence" }, types(inbox(ada)))
      send(bob, { type = "ready", ready = true })
      assert.same({ "presence", "countdown 3" }, types(inbox(ada)))
      local cat = player("cat")
      send(cat, { type = "join", room = "r1" })
      assert.same({ "cancelled", "presence" }, types(inbox(ada)))
      srv:advance(5000)
      assert.same({}, inbox(ada))
    end)

    it("stops its timer when the whole room goes mid-countdown", function()
      local ada, bob = ready_pair()
      ada:close()
      bob:close()
      srv:advance(1000)
      assert.equals(0, srv:stats().timers)
    end)

    it("keeps counting across a reload", function()
      local ada = ready_pair()
      srv:advance(1000)
      assert.same({ "countdown 2" }, types(inbox(ada)))
      assert.is_true(srv:reload())
      srv:advance(2000)
      assert.same({ "countdown 1", "start" }, types(inbox(ada)))
    end)
  end)

  it("relays chat in the room as JSON", function()
    local ada = player("ada")
    local bob = player("bob")
    send(ada, { type = "join", room = "r1" })
    send(bob, { type = "join", room = "r1" })
    inbox(bob)
    send(ada, { type = "say", text = "hi ☃" })
    assert.same({ { type = "say", from = "ada", text = "hi ☃" } }, inbox(bob))
  end)
end)

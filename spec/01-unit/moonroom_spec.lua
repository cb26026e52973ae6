local helpers = require "helpers"

describe("moonroom module", function()
  local core, ws

  before_each(function()
    core = helpers.fake_core()
    ws = helpers.load_moonroom(core)
  end)

  it("re-exports every core function unchanged", function()
    for _, name in ipairs { "join", "leave", "broadcast", "broadcast_except",
                            "members", "rooms", "count", "stats", "now" } do
      assert.equals(core[name], ws[name], name)
    end
    assert.equals("moonroom test", ws.version)
  end)

  describe("log", function()
    it("formats arguments and passes the level", function()
      ws.log.warn("room %s has %d members", "lobby", 3)
      assert.spy(core.log).was.called_with("warn", "room lobby has 3 members")
    end)

    it("logs at info when called directly", function()
      ws.log("plain text")
      assert.spy(core.log).was.called_with("info", "plain text")
    end)

    it("does not treat a lone message as a format string", function()
      ws.log.error("100% sure")
      assert.spy(core.log).was.called_with("error", "100% sure")
    end)

    it("turns non-strings into text", function()
      ws.log.info(42)
      assert.spy(core.log).was.called_with("info", "42")
    end)
  end)

  describe("command", function()
    it("splits a command and its argument", function()
      local cmd, arg = ws.command("/join lobby")
      assert.equals("join", cmd)
      assert.equals("lobby", arg)
    end)

    it("lower-cases the command and keeps the rest whole", function()
      local cmd, arg = ws.command("/NICK  Ada Lovelace")
      assert.equals("nick", cmd)
      assert.equals("Ada Lovelace", arg)
    end)

    it("returns an empty argument for a bare command", function()
      local cmd, arg = ws.command("/who")
      assert.equals("who", cmd)
      assert.equals("", arg)
    end)

    it("returns nil for ordinary text", function()
      assert.is_nil(ws.command("hello /join x"))
      assert.is_nil(ws.command("/ spaced"))
      assert.is_nil(ws.command(""))
    end)
  end)
end)

-- The kit: sending, receiving, frames and limits.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local RECORDER = helpers.fixture("recorder")

describe("moonroom.testing: messages", function()
  local srv, log

  before_each(function()
    srv = testing.server(RECORDER)
    log = helpers.observer(srv)
  end)

  after_each(function()
    srv:close()
  end)

  it("delivers text to on_message and reads the replies in order", function()
    local c = srv:connect("/")
    for i = 1, 50 do
      assert.is_true(c:send("m" .. i))
    end
    local got = c:messages()
    assert.equals(50, #got)
    for i = 1, 50 do
      assert.equals("m" .. i, got[i])
    end
    assert.same({}, c:messages())
  end)

  it("keeps the binary flag both ways", function()
    local c = srv:connect("/")
    c:send("\0\1\2\255", true)
    c:send("text")
    assert.same({ { data = "\0\1\2\255", binary = true }, { data = "text", binary = false } },
      c:received())
    assert.same({ "connect 2 /?", "message 2 binary \0\1\2\255", "message 2 text text" },
      log:messages())
  end)

  it("pops one message at a time with next()", function()
    local c = srv:connect("/")
    c:send("a")
    c:send("b", true)
    assert.equals(2, c:pending())
    assert.equals("a", c:next())
    c:send("c")
    assert.same({ data = "b", binary = true }, c:next_record())
    assert.equals("c", c:next())
    assert.is_nil(c:next())
    assert.equals(0, c:pending())
    c:send("d")
    assert.same({ "d" }, c:messages())
  end)

  it("orders messages across connections as the server sent them", function()
    local a = srv:connect("/?room=r")
    local b = srv:connect("/?room=r")
    a:send("bcast r one")
    b:send("bcast r two")
    assert.same({ "one", "sent 2", "two" }, a:messages())
    assert.same({ "one", "two", "sent 2" }, b:messages())
  end)

  it("passes UTF-8 text through unchanged", function()
    local c = srv:connect("/")
    c:send("ünïcödé ✓")
    assert.equals("ünïcödé ✓", c:next())
  end)

  it("round-trips a large message", function()
    local c = srv:connect("/")
    local big = string.rep("0123456789abcdef", 32768) -- 512 KiB
    c:send(big, true)
    local m = c:next_record()
    assert.is_true(m.binary)
    assert.equals(#big, #m.data)
    assert.is_true(m.data == big)
  end)

  it("reassembles a fragmented client message", function()
    local c = srv:connect("/")
    c:send_frame(0x1, "fr", { fin = false })
    c:send_frame(0x0, "ag", { fin = false })
    assert.is_nil(c:next())
    c:send_frame(0x0, "ment")
    assert.equals("fragment", c:next())
  end)

  it("answers a ping with a pong", function()
    local c = srv:connect("/")
    assert.equals("are you there", c:ping("are you there"))
    assert.equals("", c:ping())
    assert.same({}, c:messages())
  end)

  it("counts messages and bytes", function()
    local c = srv:connect("/")
    local before = srv:stats()
    c:send("hello")
    local after = srv:stats()
    assert.equals(before.messages_in + 1, after.messages_in)
    -- the echo, and the log line to the observer
    assert.equals(before.messages_out + 2, after.messages_out)
    assert.equals(before.bytes_in + 11, after.bytes_in)
    assert.is_true(after.bytes_out > before.bytes_out)
  end)

  it("gives ws.now() a frozen clock that advance() moves", function()
    local c = srv:connect("/")
    local t0 = srv:now()
    c:send("now")
    assert.equals(string.format("now %d", t0), c:next())
    assert.equals(t0 + 1500, srv:advance(1500))
    c:send("now")
    assert.equals(string.format("now %d", t0 + 1500), c:next())
  end)

  describe("protocol violations, answered as the server answers them", function()
    it("1007 for invalid UTF-8 in a text message", function()
      local c = srv:connect("/")
      c:send("\255\254")
      assert.is_true(c.closed)
      assert.equals(1007, c.close_code)
      assert.equals(1007, c.server_close_code)
      assert.equals(1, srv:stats().invalid_utf8)
    end)

    it("1002 for an unmasked client frame", function()
      local c = srv:connect("/")
      c:send_frame(0x1, "naked", { mask = false })
      assert.equals("closed", c.state)
      assert.equals(1002, c.close_code)
      assert.equals(1, srv:stats().protocol_errors)
    end)

    it("1002 for RSV bits without an extension", function()
      local c = srv:connect("/")
      c:send_frame(0x1, "x", { rsv = 4 })
      assert.equals(1002, c.close_code)
    end)

    it("1002 for a continuation with nothing to continue", function()
      local c = srv:connect("/")
      c:send_frame(0x0, "x")
      assert.equals(1002, c.close_code)
    end)

    it("1002 for a 1-byte close body", function()
      local c = srv:connect("/")
      c:send_frame(0x8, "x")
      assert.equals(1002, c.close_code)
    end)

    it("does not deliver the bad message to on_message", function()
      local c = srv:connect("/")
      c:send("\192\128")
      assert.same({ "connect 2 /?", "close 2 1007 invalid UTF-8 in a text message" },
        log:messages())
    end)
  end)

  describe("max_message", function()
    local small

    before_each(function()
      small = testing.server(RECORDER, { max_message = 100 })
    end)

    after_each(function()
      small:close()
    end)

    it("accepts a message of exactly max_message bytes", function()
      local c = small:connect("/")
      c:send(string.rep("x", 100))
      assert.equals(100, #c:next())
      assert.equals("open", c.state)
    end)

    it("closes with 1009 one byte over", function()
      local c = small:connect("/")
      c:send(string.rep("x", 101))
      assert.is_nil(c:next())
      assert.equals("closed", c.state)
      assert.equals(1009, c.close_code)
      assert.equals("message larger than --max-message", c.close_reason)
      assert.equals(1009, c.server_close_code)
      assert.equals(1, small:stats().messages_too_big)
    end)

    it("counts a fragmented message as a whole", function()
      local c = small:connect("/")
      c:send_frame(0x2, string.rep("x", 60), { fin = false })
      assert.equals("open", c.state)
      c:send_frame(0x0, string.rep("x", 60))
      assert.equals(1009, c.close_code)
    end)
  end)
end)

-- The kit's C module, moonroom.sim: the client-side codec and the knobs.
local testing = require "moonroom.testing"
local sim = require "moonroom.sim"

describe("moonroom.sim", function()
  it("is the module the kit uses", function()
    assert.equals(sim, testing.sim)
    assert.matches("^moonroom %d+%.%d+%.%d+$", sim.version)
  end)

  it("computes Sec-WebSocket-Accept as RFC 6455 section 1.3 does", function()
    assert.equals("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", sim.accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
  end)

  describe("encode and decode", function()
    it("round-trip masked frames of every length encoding", function()
      for _, n in ipairs { 0, 1, 125, 126, 65535, 65536, 200000 } do
        local payload = string.rep("\1\2\3\4\5", math.ceil(n / 5)):sub(1, n)
        local frames, pos = sim.decode(sim.encode(2, payload))
        assert.equals(1, #frames)
        local f = frames[1]
        assert.equals(2, f.opcode)
        assert.is_true(f.fin)
        assert.is_true(f.masked)
        assert.is_true(f.minimal)
        assert.equals(0, f.rsv)
        assert.is_true(f.payload == payload)
        assert.equals(#sim.encode(2, payload) + 1, pos)
      end
    end)

    it("masks with a fixed key, or the one given, or not at all", function()
      assert.equals("\129\133\158\55\121\185", sim.encode(1, "hello"):sub(1, 6))
      assert.equals("\129\133abcd", sim.encode(1, "hello", true, "abcd"):sub(1, 6))
      assert.equals("\129\5hello", sim.encode(1, "hello", true, false))
      assert.equals("\1\0", sim.encode(1, "", false, false))
      assert.equals("\193\0", sim.encode(1, "", true, false, 4))
    end)

    it("stops at an incomplete frame and says where it starts", function()
      local two = sim.encode(1, "one", true, false) .. sim.encode(1, "two", true, false)
      local frames, pos = sim.decode(two:sub(1, -2))
      assert.equals(1, #frames)
      assert.equals("one", frames[1].payload)
      assert.equals(6, pos)
      frames, pos = sim.decode(two, 6)
      assert.equals("two", frames[1].payload)
      assert.equals(#two + 1, pos)
    end)

    it("flags a non-minimal length", function()
      local frames = sim.decode("\129\126\0\5hello")
      assert.is_false(frames[1].minimal)
    end)
  end)

  it("sets the core's log level and returns the previous one", function()
    local prev = sim.log_level("off")
    assert.equals("off", sim.log_level("warn"))
    assert.equals("warn", sim.log_level(prev))
    assert.has_error(function() sim.log_level("loud") end)
  end)
end)

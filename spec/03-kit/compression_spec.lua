-- The kit and permessage-deflate: a spec can connect a compressing client,
-- and the handler under test sees the same plain messages either way.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local RECORDER = helpers.fixture("recorder")

local function chat(n)
  local unit = '{"type":"message","room":"lobby","from":"ada","text":"hello"}'
  return (unit:rep(math.ceil(n / #unit))):sub(1, n)
end

describe("moonroom.testing: compression", function()
  local srv, log

  before_each(function()
    srv = testing.server(RECORDER, { compression = true })
    log = helpers.observer(srv)
  end)

  after_each(function()
    srv:close()
  end)

  it("negotiates permessage-deflate when asked, with no context takeover", function()
    local c = srv:connect("/", { compress = true })
    assert.is_true(c.compressed)
    assert.equals("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
      c.response.headers["sec-websocket-extensions"])
    local plain = srv:connect("/")
    assert.is_false(plain.compressed)
    assert.is_nil(plain.response.headers["sec-websocket-extensions"])
  end)

  it("hands the handler plain messages and compresses replies over the threshold", function()
    local c = srv:connect("/", { compress = true })
    local big = chat(1000)
    c:send(big)
    c:send("short")
    c:send("\0\1\2" .. big, true)
    -- The kit sent all three compressed; the handler saw them plain.
    assert.equals(3, c.compressed_out)
    assert.same({ "connect 2 /?", "message 2 text " .. big, "message 2 text short",
      "message 2 binary \0\1\2" .. big }, log:messages())
    -- The echoes: the two long ones came back with RSV1, "short" plain.
    assert.same({ { data = big, binary = false }, { data = "short", binary = false },
      { data = "\0\1\2" .. big, binary = true } }, c:received())
    assert.equals(2, c.compressed_in)
    local st = srv:stats()
    assert.equals(3, st.compressed_messages_in)
    assert.equals(2, st.compressed_messages_out)
    assert.is_true(st.compressed_bytes_saved > 1000)
  end)

  it("broadcasts to a mixed room: one deflate, compressed and plain recipients", function()
    local a = srv:connect("/", { compress = true })
    local b = srv:connect("/", { compress = true })
    local p = srv:connect("/")
    for _, c in ipairs({ a, b, p }) do
      c:send("join room")
      assert.same({ "join room true" }, c:messages())
    end
    local before = srv:stats()
    local text = chat(3000)
    p:send("bcast room " .. text)
    assert.same({ text, "sent 3" }, p:messages())
    assert.same({ text }, a:messages())
    assert.same({ text }, b:messages())
    assert.equals(1, a.compressed_in)
    assert.equals(1, b.compressed_in)
    assert.equals(0, p.compressed_in)
    local after = srv:stats()
    assert.equals(1, after.messages_deflated - before.messages_deflated)
    assert.equals(2, after.compressed_messages_out - before.compressed_messages_out)
  end)

  it("does not negotiate when the server's compression is off", function()
    local off = testing.server(RECORDER)
    local c = off:connect("/", { compress = true })
    assert.is_false(c.compressed)
    c:send(chat(500))
    assert.same({ chat(500) }, c:messages())
    assert.equals(0, c.compressed_in)
    off:close()
  end)

  it("passes the server's compression options through", function()
    local s = testing.server(RECORDER, { compression = "on", compression_threshold = 0,
      compression_level = 9, compression_window = 10 })
    local c = s:connect("/", { compress = "permessage-deflate; server_max_window_bits=12" })
    assert.matches("server_max_window_bits=10$", c.response.headers["sec-websocket-extensions"])
    c:send(chat(50))
    assert.same({ chat(50) }, c:messages())
    assert.equals(1, c.compressed_in) -- threshold 0: even 50 bytes
    s:close()
    assert.has_error(function()
      testing.server(RECORDER, { compression_window = 16 })
    end)
  end)

  it("closes 1007 for corrupt compressed data and 1002 for RSV1 without it", function()
    local c = srv:connect("/", { compress = true })
    c:send_frame(0x1, "\255\255\255", { rsv = 4 })
    assert.equals(1007, c.close_code)
    assert.equals("corrupt compressed data", c.close_reason)
    local p = srv:connect("/")
    p:send_frame(0x1, "x", { rsv = 4 })
    assert.equals(1002, p.close_code)
    assert.equals(1, srv:stats().inflate_errors)
  end)
end)

-- The kit: the server's abuse limits, one spec each, decided before any
-- handler runs.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local SCRIPT = helpers.temp_script([[
  return {
    on_message = function(conn, msg) conn:send(msg) end,
  }
]])

describe("moonroom.testing: abuse limits", function()
  teardown(function() os.remove(SCRIPT) end)

  it("answers 429 with Retry-After past max_connections_per_ip", function()
    local srv = testing.server(SCRIPT, { max_connections_per_ip = 2 })
    local a = srv:connect("/")
    srv:connect("/")
    local none, status, _, response = srv:try_connect("/")
    assert.is_nil(none)
    assert.equals(429, status)
    assert.equals("10", response.headers["retry-after"])
    -- Another address is served; a closed connection frees its slot.
    srv:connect("/", { remote_addr = "10.0.0.2" })
    a:close()
    srv:connect("/")
    assert.equals(1, srv:stats().connections_per_ip_refused)
    srv:close()
  end)

  it("refuses a browser from another origin with 403, allows no Origin", function()
    local srv = testing.server(SCRIPT, { allow_origin = "https://example.com" })
    srv:connect("/", { headers = { Origin = "https://example.com" } })
    srv:connect("/")
    local none, status, body = srv:try_connect("/", { headers = { Origin = "https://evil.test" } })
    assert.is_nil(none)
    assert.equals(403, status)
    assert.matches("origin not allowed", body)
    assert.equals(1, srv:stats().origins_refused)
    srv:close()
  end)

  it("closes 1008 past max_messages_per_second, before on_message", function()
    local srv = testing.server(SCRIPT, { max_messages_per_second = 1, message_burst = 2 })
    local conn = srv:connect("/")
    conn:send("a")
    conn:send("b")
    srv:advance(1000) -- one more token
    conn:send("c")
    assert.same({ "a", "b", "c" }, conn:messages())
    conn:send("d")
    assert.equals(1008, conn.close_code)
    assert.equals("message rate exceeded", conn.close_reason)
    assert.same({}, conn:messages()) -- on_message did not see "d"
    assert.equals(1, srv:stats().message_rate_closes)
    srv:close()
  end)
end)

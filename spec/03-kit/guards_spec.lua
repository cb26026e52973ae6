-- The kit: --lua-memory-limit (lua_memory_limit = MiB) through the real gate.
-- tests/integration/scripts/guards.lua grows a table that is never freed by
-- 1 MiB per "grow" and echoes anything else.
local testing = require "moonroom.testing"

local GUARDS = "tests/integration/scripts/guards.lua"

describe("moonroom.testing: the Lua memory limit", function()
  local srv, level

  -- The refusals are logged as errors; the kit's default level would print
  -- them among busted's output.
  setup(function()
    level = testing.log_level("off")
  end)

  teardown(function()
    testing.log_level(level)
  end)

  after_each(function()
    if srv then
      srv:close()
      srv = nil
    end
  end)

  local function grow_until_closed(c, most)
    for i = 1, most do
      c:send("grow")
      if c.closed then
        return i
      end
      assert.equals("grew " .. i, c:next())
    end
  end

  -- The script's own ws.stats().lua_kb (the kit's stats leave it out).
  local function lua_kb(c)
    c:send("stats")
    return tonumber(c:next():match("lua_kb=(%d+)"))
  end

  it("closes 1011 the connection whose handler crossed it; others go on", function()
    srv = testing.server(GUARDS, { lua_memory_limit = 16 })
    local watcher = srv:connect("/")
    local other = srv:connect("/")
    local leaky = srv:connect("/")
    local n = grow_until_closed(leaky, 40)
    assert.is_truthy(n and n <= 17, n)
    assert.equals(1011, leaky.server_close_code)
    assert.equals("lua memory limit", leaky.server_close_reason)
    local st = srv:stats()
    assert.equals(1, st.lua_memory_limit_hits)
    assert.equals(0, st.handler_errors)
    -- A handler that keeps nothing is still served while the heap is over.
    other:send("hello")
    assert.equals("hello", other:next())
    assert.is_false(other.closed)
    -- One that keeps more is refused too, and then the heap is over the
    -- limit for good: new upgrades and HTTP requests get 503 before Lua.
    other:send("grow")
    assert.is_true(other.closed)
    assert.equals(1011, other.server_close_code)
    local _, status, body = srv:try_connect("/")
    assert.equals(503, status)
    assert.equals("server over its memory limit", body)
    st = srv:stats()
    assert.equals(2, st.lua_memory_limit_hits)
    assert.equals(1, st.lua_memory_refusals)
    -- Bounded: the limit, and the 1 MiB each refused call kept.
    local kb = lua_kb(watcher)
    assert.is_true(kb > 16 * 1024 and kb < 16 * 1024 + 4096, kb)
  end)

  it("is off with 0: the heap grows past where the limit would be", function()
    srv = testing.server(GUARDS, { lua_memory_limit = 0 })
    local c = srv:connect("/")
    assert.is_nil(grow_until_closed(c, 24))
    assert.is_true(lua_kb(c) > 24 * 1024)
    assert.equals(0, srv:stats().lua_memory_limit_hits)
  end)
end)

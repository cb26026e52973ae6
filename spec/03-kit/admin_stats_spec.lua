-- The admin server's counters (--admin-listen; see core/admin.c) are part of
-- ws.stats() like every other counter, through the real core: a script sees
-- them, at 0 where no admin listener runs (as in the kit). Their values under
-- traffic are checked against /metrics by tests/integration/test_admin.py.
-- Driven by spec/fixtures/eval.lua.
local helpers = require "helpers"

local ADMIN = { "admin_requests", "admin_bad_requests",
  "admin_connections_refused", "admin_timeouts" }

describe("ws.stats() and the admin counters", function()
  local srv, c

  before_each(function()
    srv, c = helpers.eval_server()
  end)

  after_each(function()
    srv:close()
  end)

  it("lists every admin counter, at 0 without an admin listener", function()
    for _, name in ipairs(ADMIN) do
      assert.is_true(c:send("return ws.stats()." .. name))
      assert.equals("ok 0", c:next(), name)
      assert.equals(0, srv:stats()[name], name)
    end
  end)
end)

-- The kit: a reload requires the modules of the script's directory afresh,
-- subdirectories included (lib/util.lua is "lib.util"), and the version
-- names them: a change to a module alone is a new version.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local SCRIPT = [[
local util = require "lib.util"
return {
  on_message = function(conn)
    conn:send(util.tag)
  end,
}
]]

describe("moonroom.testing: modules and versions", function()
  local dir, srv

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "/lib'"))
    helpers.write_file(dir .. "/lib/util.lua", 'return { tag = "u1" }\n')
    helpers.write_file(dir .. "/handler.lua", SCRIPT)
    srv = testing.server(dir .. "/handler.lua")
  end)

  after_each(function()
    srv:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("a module in a subdirectory changes the version and runs after a reload", function()
    local c = srv:connect("/")
    c:send("?")
    assert.equals("u1", c:next())
    local v1 = srv:version()
    assert.matches("^version 1 sha256:", v1)

    helpers.write_file(dir .. "/lib/util.lua", 'return { tag = "u2" }\n')
    assert.is_true(srv:reload())
    local v2 = srv:version()
    assert.matches("^version 2 sha256:", v2)
    assert.not_equals(v1:match("sha256:(%x+)"), v2:match("sha256:(%x+)"))
    c:send("?")
    assert.equals("u2", c:next())

    -- Back to the first content: the first digest again.
    helpers.write_file(dir .. "/lib/util.lua", 'return { tag = "u1" }\n')
    assert.is_true(srv:reload())
    assert.equals(v1:match("sha256:(%x+)"), srv:version():match("sha256:(%x+)"))
  end)

  it("a misspelt handler is only a warning: the script loads", function()
    helpers.write_file(dir .. "/handler.lua", SCRIPT:gsub("on_message", "on_mesage"))
    helpers.with_logs(function()
      assert.is_true(srv:reload())
    end)
    local c = srv:connect("/")
    c:send("?")
    assert.same({}, c:messages())
  end)
end)

-- Requiring the kit: the one clear error under another Lua or without the C
-- module, and the modules a script under test can require (the spec's own
-- package.path, after the script's directory).
local testing = require "moonroom.testing"

-- Requires moonroom.testing afresh with fn's changes in effect, then puts
-- back the loaded modules and whatever fn changed (fn returns an undo).
local function require_afresh(fn)
  local saved_testing = package.loaded["moonroom.testing"]
  local saved_sim = package.loaded["moonroom.sim"]
  package.loaded["moonroom.testing"] = nil
  local undo = fn()
  local ok, err = pcall(require, "moonroom.testing")
  undo()
  package.loaded["moonroom.testing"] = saved_testing
  package.loaded["moonroom.sim"] = saved_sim
  return ok, err
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

describe("require 'moonroom.testing'", function()
  it("under a Lua that is not LuaJIT says how to select LuaJIT", function()
    local ok, err = require_afresh(function()
      local jit = rawget(_G, "jit")
      _G.jit = nil
      return function() _G.jit = jit end
    end)
    assert.is_false(ok)
    assert.matches("^moonroom%.testing: the test kit needs LuaJIT", err)
    assert.matches("busted --lua=luajit", err, 1, true)
    assert.matches('lua = "luajit"', err, 1, true)
    assert.matches(".busted", err, 1, true)
  end)

  it("without moonroom.sim on package.cpath says where it looked and where it is", function()
    local ok, err = require_afresh(function()
      local cpath = package.cpath
      package.loaded["moonroom.sim"] = nil
      package.cpath = "/nonexistent/moonroom-kit/?.so"
      return function() package.cpath = cpath end
    end)
    assert.is_false(ok)
    assert.matches("^moonroom%.testing: the kit's C module moonroom%.sim", err)
    assert.matches("/nonexistent/moonroom-kit/?.so", err, 1, true)
    assert.matches("build/lua/moonroom/sim.so", err, 1, true)
    assert.matches("P/lib/lua/5.1", err, 1, true)
    assert.matches("LUA_CPATH", err, 1, true)
  end)

  it("is the same module again afterwards", function()
    assert.equals(testing, require "moonroom.testing")
  end)
end)

describe("modules a script under test requires", function()
  local dir, lib, path

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    lib = dir .. "-lib"
    assert(os.execute("mkdir -p '" .. dir .. "' '" .. lib .. "'"))
    write(dir .. "/app.lua", [[
      local a, b = require "kitreq_shadowed", require "kitreq_only_in_lib"
      return { on_connect = function(conn) conn:send(a .. ", " .. b) end }
    ]])
    write(dir .. "/kitreq_shadowed.lua", "return 'next to the script'")
    write(lib .. "/kitreq_shadowed.lua", "return 'in lib'")
    write(lib .. "/kitreq_only_in_lib.lua", "return 'only in lib'")
    path = package.path
  end)

  after_each(function()
    package.path = path
    os.execute("rm -rf '" .. dir .. "' '" .. lib .. "'")
  end)

  it("are found next to the script first, then on the spec's package.path", function()
    package.path = lib .. "/?.lua;" .. path
    local srv = testing.server(dir .. "/app.lua")
    local conn = srv:connect("/")
    assert.equals("next to the script, only in lib", conn:next())
    srv:close()
  end)

  it("are not found when the spec's package.path does not have them", function()
    local srv, err = testing.try_server(dir .. "/app.lua")
    assert.is_nil(srv)
    assert.matches("module 'kitreq_only_in_lib' not found", err, 1, true)
  end)
end)

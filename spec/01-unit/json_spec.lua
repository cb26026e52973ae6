-- ws.json when lua-cjson is not installed: lua/moonroom.lua still loads (a
-- script that never uses JSON runs), and the first use says what to install.
local helpers = require "helpers"

describe("ws.json without lua-cjson", function()
  local saved_loaded, saved_preload

  before_each(function()
    saved_loaded, saved_preload = package.loaded.cjson, package.preload.cjson
    package.loaded.cjson = nil
    package.preload.cjson = function() error("module 'cjson' not found", 0) end
  end)

  after_each(function()
    package.loaded.cjson, package.preload.cjson = saved_loaded, saved_preload
    package.loaded["moonroom"] = nil
  end)

  it("loads the module and raises at the caller's line on first use", function()
    local core = helpers.fake_core()
    core.utf8_valid = function() return true end
    local ws = helpers.load_moonroom(core)
    assert.is_table(ws.json)
    local ok, err = pcall(function() local s = ws.json.encode({}) return s end)
    assert.is_false(ok)
    assert.matches("json_spec.lua:%d+: ws.json needs lua%-cjson %(apt%-get install lua%-cjson%): "
      .. "module 'cjson' not found", err)
    ok, err = pcall(function() local v = ws.json.decode("{}") return v end)
    assert.is_false(ok)
    assert.matches("ws.json needs lua%-cjson", err)
  end)
end)

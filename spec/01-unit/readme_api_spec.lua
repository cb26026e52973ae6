-- The README's table of the moonroom module lists exactly what the module
-- has: a function added without documentation, or documented but gone,
-- fails here.
local testing = require "moonroom.testing"

local function readme_names()
  local f = assert(io.open("README.md", "rb"))
  local text = f:read("*a")
  f:close()
  local section = text:match("### The moonroom module\n(.-)\n### ")
  assert(section, "README has no 'The moonroom module' section")
  local names = {}
  for row in section:gmatch("\n| `ws%.([%w_]+)") do
    names[row] = true
  end
  return names
end

describe("README's moonroom module table", function()
  it("names every field of the module, and nothing else", function()
    local srv = testing.server("spec/fixtures/module_keys.lua")
    local conn = srv:connect("/")
    local module = {}
    for name in conn:next():gmatch("[^,]+") do
      module[name] = true
    end
    srv:close()
    local documented = readme_names()
    local missing, extra = {}, {}
    for name in pairs(module) do
      if not documented[name] then missing[#missing + 1] = name end
    end
    for name in pairs(documented) do
      if not module[name] then extra[#extra + 1] = name end
    end
    table.sort(missing)
    table.sort(extra)
    assert.same({}, missing, "in the module but not in the README table")
    assert.same({}, extra, "in the README table but not in the module")
  end)
end)

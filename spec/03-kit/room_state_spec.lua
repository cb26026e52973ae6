-- The room directory (ws.room_list) and room state (ws.room_state) through
-- the real core, driven by spec/fixtures/eval.lua.
local helpers = require "helpers"
local testing = require "moonroom.testing"

-- Lists ws.room_list() as "name=count,...".
local LIST = [[
  local out = {}
  for i, r in ipairs(ws.room_list()) do out[i] = r.name .. "=" .. r.count end
  return table.concat(out, ",")]]

describe("ws.room_list", function()
  local srv, c

  before_each(function()
    srv, c = helpers.eval_server()
  end)

  after_each(function()
    srv:close()
  end)

  local function eval(code)
    return helpers.eval(c, code)
  end

  it("is empty when no room has members", function()
    assert.equals("ok 0", eval("return #ws.room_list()"))
    assert.equals("ok ", eval(LIST))
  end)

  it("lists every room with its member count, sorted bytewise by name", function()
    for _, target in ipairs { "/?room=b", "/?room=a", "/?room=b", "/?room=B", "/?room=%C3%A4",
                              "/?room=ab", "/?room=b" } do
      srv:connect(target)
    end
    assert.equals("ok B=1,a=1,ab=1,b=3,ä=1", eval(LIST))
    assert.equals("ok name count", eval([[
      local r = ws.room_list()[1]
      local keys = {}
      for k in pairs(r) do keys[#keys + 1] = k end
      table.sort(keys, function(x, y) return x > y end)
      return unpack(keys)]]))
  end)

  it("follows joins and leaves, and drops a room when it empties", function()
    local a = srv:connect("/?room=x")
    srv:connect("/?room=x")
    assert.equals("ok x=2", eval(LIST))
    assert.equals("ok true", eval("return ws.join(conn, 'y')"))
    assert.equals("ok x=2,y=1", eval(LIST))
    a:close()
    assert.equals("ok x=1,y=1", eval(LIST))
    assert.equals("ok true", eval("return ws.leave(conn, 'y')"))
    assert.equals("ok x=1", eval(LIST))
  end)

  it("lists local members only", function()
    srv:connect("/?room=here")
    assert.equals(0, srv:remote_broadcast("elsewhere", "from node b"))
    assert.equals("ok here=1", eval(LIST))
  end)

  it("agrees with ws.count for thousands of rooms", function()
    assert.equals("ok 3000 true", eval([[
      for i = 1, 3000 do ws.join(conn, "room" .. i) end
      local list, ok = ws.room_list(), true
      for i, r in ipairs(list) do
        ok = ok and r.count == ws.count(r.name) and (i == 1 or list[i - 1].name < r.name)
      end
      return #list, ok]]))
  end)
end)

describe("ws.room_state", function()
  local srv, c

  before_each(function()
    srv = testing.server(helpers.fixture("eval"))
    c = srv:connect("/?room=r")
  end)

  after_each(function()
    srv:close()
  end)

  local function eval(code, conn)
    conn = conn or c
    assert.is_true(conn:send(code))
    return conn:next()
  end

  it("is nil, \"empty room\" for a room without local members", function()
    assert.equals("ok nil empty room", eval("return ws.room_state('nobody')"))
    assert.equals(0, srv:remote_broadcast("remote-only", "x"))
    assert.equals("ok nil empty room", eval("return ws.room_state('remote-only')"))
  end)

  it("is one table per room, made on first use, shared by every handler", function()
    local d = srv:connect("/?room=r")
    srv:connect("/?room=other")
    assert.equals("ok true", eval("local s = ws.room_state('r') s.topic = 'lua' "
      .. "return s == ws.room_state('r')"))
    assert.equals("ok lua nil", eval("return ws.room_state('r').topic, "
      .. "ws.room_state('other').topic", d))
  end)

  it("stays while members remain and goes with the last one", function()
    local d = srv:connect("/?room=r")
    eval("keep.old = ws.room_state('r') keep.old.n = 1")
    d:close()
    assert.equals("ok true 1", eval("local s = ws.room_state('r') return s == keep.old, s.n"))
    assert.equals("ok true", eval("return ws.leave(conn, 'r')"))
    assert.equals("ok nil empty room", eval("return ws.room_state('r')"))
    assert.equals("ok true false nil", eval("local j = ws.join(conn, 'r') "
      .. "local s = ws.room_state('r') return j, s == keep.old, s.n"))
  end)

  it("goes when the last member's connection closes, and a new room starts fresh", function()
    local d = srv:connect("/?room=q")
    eval("ws.room_state('q').owner = conn.id", d)
    d:close()
    assert.equals("ok nil empty room", eval("return ws.room_state('q')"))
    local e = srv:connect("/?room=q")
    assert.equals("ok nil", eval("return ws.room_state('q').owner", e))
    e:drop()
    srv:connect("/?room=q")
    assert.equals("ok nil", eval("ws.join(conn, 'q') return ws.room_state('q').owner"))
  end)

  it("goes when a refused upgrade takes the last member with it", function()
    local s = testing.server(helpers.temp_script([[
      local ws = require "moonroom"
      return {
        on_connect = function(conn, req)
          ws.join(conn, "r")
          local st = ws.room_state("r")
          st.n = (st.n or 0) + 1
          if req.query.refuse then return false end
          conn:send(tostring(st.n))
        end,
      }]]))
    assert.is_nil(s:try_connect("/?refuse=1"))
    assert.equals("1", s:connect("/"):next())
    s:close()
  end)

  it("goes when a coroutine empties the room", function()
    assert.equals("ok true nil", eval([[
      ws.room_state('r').n = 1
      coroutine.wrap(function() ws.leave(conn, 'r') end)()
      local j = ws.join(conn, 'r')
      return j, ws.room_state('r').n]]))
  end)

  it("survives a reload: the new version of the script sees the same table", function()
    local v1 = [[
      local ws = require "moonroom"
      return {
        on_connect = function(conn) ws.join(conn, "r") end,
        on_message = function(conn, msg)
          local st = ws.room_state("r")
          st.log = (st.log or "") .. msg
          conn:send("v1 " .. st.log)
        end,
      }]]
    local path = helpers.temp_script(v1)
    local s = testing.server(path)
    local a = s:connect("/")
    a:send("a")
    assert.equals("v1 a", a:next())
    helpers.write_file(path, (v1:gsub('"v1 "', '"v2 "')))
    assert.is_true(s:reload())
    a:send("b")
    assert.equals("v2 ab", a:next())
    s:close()
    os.remove(path)
  end)

  it("is gone by the time on_close of the last member runs", function()
    local s = testing.server(helpers.temp_script([[
      local ws = require "moonroom"
      return {
        on_connect = function(conn, req)
          ws.join(conn, req.query.room)
          ws.join(conn, "watch")
          ws.room_state(req.query.room).x = 1
        end,
        on_close = function(conn, code, reason)
          local st, err = ws.room_state("solo")
          ws.broadcast("watch", tostring(st) .. " " .. tostring(err))
        end,
      }]]))
    local watcher = s:connect("/?room=w")
    s:connect("/?room=solo"):close()
    assert.equals("nil empty room", watcher:next())
    s:close()
  end)
end)

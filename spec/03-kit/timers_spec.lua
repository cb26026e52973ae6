-- The kit: script timers (ws.after, ws.every, conn:after) run by
-- srv:advance(ms), on the server's own heap and through the same gate as
-- the handlers.
local helpers = require "helpers"
local testing = require "moonroom.testing"

-- A script whose handlers are the given source (a table constructor body),
-- with `ws`, `H` (the handler table), `t0` (the clock when it loaded) and
-- `at()` (ms since t0) in scope.
local function script(body)
  return ([[
local ws = require "moonroom"
local t0 = ws.now()
local function at() return string.format("%%d", ws.now() - t0) end
local H
H = {
%s
}
return H
]]):format(body)
end

describe("moonroom.testing: timers", function()
  local paths, servers

  before_each(function()
    paths, servers = {}, {}
  end)

  after_each(function()
    for _, srv in ipairs(servers) do
      srv:close()
    end
    for _, path in ipairs(paths) do
      os.remove(path)
    end
  end)

  local function start(body)
    local path = helpers.temp_script(script(body))
    paths[#paths + 1] = path
    local srv = testing.server(path)
    servers[#servers + 1] = srv
    return srv, path
  end

  it("ws.after runs once, at its due time, with its extra arguments", function()
    local srv = start([[
  on_connect = function(conn)
    conn.state.t = ws.after(100, function(a, b, c, n)
      conn:send(("%s %s %s %d @%s"):format(a, tostring(b), c, n or -1, at()))
    end, "x", nil, "z")
  end,
  on_message = function(conn, msg)
    conn:send(tostring(conn.state.t:pending()))
  end,]])
    local a = srv:connect("/")
    assert.equals(1, srv:stats().timers)
    a:send("pending?")
    assert.same({ "true" }, a:messages())
    srv:advance(99)
    assert.same({}, a:messages())
    srv:advance(1)
    assert.same({ "x nil z -1 @100" }, a:messages())
    a:send("pending?")
    assert.same({ "false" }, a:messages())
    srv:advance(10000)
    assert.same({}, a:messages())
    assert.equals(0, srv:stats().timers)
  end)

  it("runs ws.after(0) on the next turn, never inside the call", function()
    local srv = start([[
  on_message = function(conn, msg)
    ws.after(0, function() conn:send("later @" .. at()) end)
    conn:send("now")
  end,]])
    local a = srv:connect("/")
    a:send("go")
    assert.same({ "now" }, a:messages())
    srv:advance(0)
    assert.same({ "later @0" }, a:messages())
  end)

  it("rounds fractions of a millisecond up: a timer never fires early", function()
    local srv = start([[
  on_connect = function(conn)
    ws.after(0.2, function() conn:send("a @" .. at()) end)
    ws.after(99.5, function() conn:send("b @" .. at()) end)
  end,]])
    local a = srv:connect("/")
    srv:advance(0)
    assert.same({}, a:messages())
    srv:advance(99)
    assert.same({ "a @1" }, a:messages())
    srv:advance(1)
    assert.same({ "b @100" }, a:messages())
  end)

  it("ws.every repeats on its interval until cancelled, from inside or out", function()
    local srv = start([[
  on_connect = function(conn)
    local n = 0
    local t
    t = ws.every(100, function(tag)
      n = n + 1
      conn:send(tag .. n .. " @" .. at())
      if n == 3 then
        conn:send("cancel inside: " .. tostring(t:cancel()))
      end
    end, "self")
    conn.state.other = ws.every(250, function() conn:send("other @" .. at()) end)
  end,
  on_message = function(conn)
    conn:send("cancel: " .. tostring(conn.state.other:cancel()))
    conn:send("again: " .. tostring(conn.state.other:cancel()))
    conn:send("pending: " .. tostring(conn.state.other:pending()))
  end,]])
    local a = srv:connect("/")
    srv:advance(1000)
    assert.same({ "self1 @100", "self2 @200", "other @250", "self3 @300",
                  "cancel inside: true", "other @500", "other @750",
                  "other @1000" }, a:messages())
    a:send("stop")
    assert.same({ "cancel: true", "again: false", "pending: false" }, a:messages())
    srv:advance(1000)
    assert.same({}, a:messages())
    assert.equals(0, srv:stats().timers)
  end)

  it("fires in due order, ties in the order they were scheduled", function()
    local srv = start([[
  on_connect = function(conn)
    local function say(tag) conn:send(tag .. " @" .. at()) end
    ws.after(30, say, "c")
    ws.after(10, say, "a1")
    ws.after(20, say, "b")
    ws.after(10, say, "a2")
    -- Re-armed after each run, so later than what was scheduled before.
    ws.every(10, say, "e")
    conn:after(10, function(c, tag) say(tag) end, "a3")
  end,]])
    local a = srv:connect("/")
    srv:advance(30)
    assert.same({ "a1 @10", "a2 @10", "e @10", "a3 @10", "b @20", "e @20",
                  "c @30", "e @30" }, a:messages())
  end)

  it("runs what callbacks schedule inside the advanced window: a countdown", function()
    local srv = start([[
  on_message = function(conn, msg)
    local n = tonumber(msg)
    local function tick()
      conn:send(n .. " @" .. at())
      n = n - 1
      if n > 0 then
        ws.after(1000, tick)
      else
        -- Due at once: runs in the same advance, after this call returns.
        ws.after(0, function() conn:send("liftoff @" .. at()) end)
      end
    end
    ws.after(1000, tick)
  end,]])
    local a = srv:connect("/")
    a:send("3")
    srv:advance(2500)
    assert.same({ "3 @1000", "2 @2000" }, a:messages())
    srv:advance(500)
    assert.same({ "1 @3000", "liftoff @3000" }, a:messages())
    assert.equals(0, srv:stats().timers)
  end)

  it("lets clients answer between due times (a timer closes, on_close sees the time)", function()
    local srv = start([[
  on_connect = function(conn)
    ws.join(conn, "all")
    if conn.id == 1 then
      ws.after(100, function() conn:close(4000, "time is up") end)
    end
  end,
  on_close = function(conn, code)
    ws.broadcast("all", conn.id .. " closed " .. code .. " @" .. at())
  end,]])
    local a = srv:connect("/")
    local b = srv:connect("/")
    srv:advance(1000)
    assert.equals("closed", a.state)
    assert.equals(4000, a.close_code)
    assert.same({ "1 closed 4000 @100" }, b:messages())
  end)

  it("skips the ticks a late loop missed instead of replaying them", function()
    local srv = start([[
  on_connect = function(conn)
    ws.every(100, function() conn:send("tick @" .. at()) end)
  end,]])
    local a = srv:connect("/")
    local t0 = srv:now()
    -- One timer run 350 ms late, as a loop blocked that long would make.
    srv._sim:run_timers(t0 + 350)
    srv:_pump()
    assert.same({ "tick @350" }, a:messages())
    srv:advance(100)
    assert.same({ "tick @450" }, a:messages())
  end)

  it("raises for misuse", function()
    local srv = start([[
  on_message = function(conn, msg)
    local f = function() end
    local cases = {
      function() ws.after("10", f) end,
      function() ws.after(-1, f) end,
      function() ws.after(0 / 0, f) end,
      function() ws.after(math.huge, f) end,
      function() ws.after(10, "f") end,
      function() ws.after(10) end,
      function() ws.every(0, f) end,
      function() ws.every(-5, f) end,
      function() conn:after(-1, f) end,
      function() conn:after(10, 42) end,
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case)
      conn:send(ok and "no error" or tostring(err))
    end
  end,]])
    local a = srv:connect("/")
    a:send("go")
    local errs = a:messages()
    assert.equals(10, #errs)
    assert.matches("bad argument #1 to 'after' %(number expected, got string%)", errs[1])
    assert.matches("bad argument #1 to 'after' %(ms must not be negative%)", errs[2])
    assert.matches("bad argument #1 to 'after' %(ms must be a number, not NaN%)", errs[3])
    assert.matches("bad argument #1 to 'after' %(ms must be finite", errs[4])
    assert.matches("bad argument #2 to 'after' %(function expected, got string%)", errs[5])
    assert.matches("bad argument #2 to 'after' %(function expected, got no value%)", errs[6])
    assert.matches("bad argument #1 to 'every' %(the interval must be more than 0 ms%)", errs[7])
    assert.matches("bad argument #1 to 'every' %(ms must not be negative%)", errs[8])
    assert.matches("bad argument #1 to 'after' %(ms must not be negative%)", errs[9])
    assert.matches("bad argument #2 to 'after' %(function expected, got number%)", errs[10])
    assert.equals(0, srv:stats().timers)
  end)

  describe("conn:after", function()
    local deadline = [[
  on_connect = function(conn, req)
    ws.join(conn, "all")
    -- Authenticate within 5 s.
    conn.state.deadline = conn:after(5000, function(c, code, reason)
      c:close(code, reason)
    end, 4001, "authenticate first")
    if req.query.refuse then
      return false, 403
    end
  end,
  on_message = function(conn, msg)
    if msg == "token" then
      conn:send("welcome: " .. tostring(conn.state.deadline:cancel()))
    end
  end,
  on_close = function(conn, code)
    ws.broadcast("all", ("%d closed %d @%s, deadline pending: %s"):format(
      conn.id, code, at(), tostring(conn.state.deadline:pending())))
  end,]]

    it("gives a connection a deadline, which the handler can cancel", function()
      local srv = start(deadline)
      local a = srv:connect("/")
      local b = srv:connect("/")
      assert.equals(2, srv:stats().timers)
      a:send("token")
      assert.same({ "welcome: true" }, a:messages())
      srv:advance(4999)
      assert.equals("open", b.state)
      srv:advance(1)
      assert.equals("closed", b.state)
      assert.equals(4001, b.close_code)
      assert.equals("authenticate first", b.close_reason)
      assert.same({ "2 closed 4001 @5000, deadline pending: false" }, a:messages())
      assert.equals("open", a.state)
      assert.equals(0, srv:stats().timers)
    end)

    it("is cancelled when the connection closes, before on_close runs", function()
      local srv = start(deadline)
      local a = srv:connect("/")
      local b = srv:connect("/")
      srv:advance(1000)
      b:close(1000)
      assert.same({ "2 closed 1000 @1000, deadline pending: false" }, a:messages())
      assert.equals(1, srv:stats().timers)
      a:drop()
      assert.equals(0, srv:stats().timers)
      srv:advance(10000)
      assert.equals(0, srv:stats().timer_errors)
    end)

    it("is cancelled when on_connect refuses the connection after setting it", function()
      local srv = start(deadline)
      local conn, status = srv:try_connect("/?refuse=1")
      assert.is_nil(conn)
      assert.equals(403, status)
      assert.equals(0, srv:stats().timers)
    end)

    it("does not run for a connection that is closing", function()
      local srv = start([[
  on_connect = function(conn)
    conn:after(100, function(c) c:send("too late") end)
  end,
  on_message = function(conn) conn:close(4000, "bye") end,]])
      local a = srv:connect("/")
      a:pause() -- the client does not answer the close: it stays closing
      a:send("close me")
      srv:advance(200)
      a:resume()
      assert.same({}, a:messages())
      assert.equals(4000, a.close_code)
      assert.equals(0, srv:stats().timers)
    end)

    it("answers nil, \"closed\" on a handle whose connection is gone", function()
      local srv = start([[
  on_connect = function(conn)
    if H.kept then
      local t, err = H.kept:after(10, function() end)
      conn:send(tostring(t) .. " " .. tostring(err))
    else
      H.kept = conn
    end
  end,]])
      local a = srv:connect("/")
      a:close()
      local b = srv:connect("/")
      assert.same({ "nil closed" }, b:messages())
      assert.equals(0, srv:stats().timers)
    end)
  end)

  it("counts an error in a callback, and stops a repeating one", function()
    local srv = start([[
  on_connect = function(conn)
    ws.after(10, function() error("once") end)
    ws.every(10, function() conn:send("bad @" .. at()); error("again") end)
    ws.every(10, function() conn:send("good @" .. at()) end)
  end,]])
    local a = srv:connect("/")
    helpers.with_logs(function()
      srv:advance(30)
    end)
    assert.same({ "bad @10", "good @10", "good @20", "good @30" }, a:messages())
    assert.equals(2, srv:stats().timer_errors)
    assert.equals(0, srv:stats().handler_errors)
    assert.equals(1, srv:stats().timers)
    assert.equals("open", a.state)
  end)

  describe("across a reload", function()
    local v1 = [[
  on_connect = function(conn) ws.join(conn, "all") end,
  on_message = function(conn, msg)
    local V = "v1"
    H.ticker = ws.every(100, function() ws.broadcast("all", V .. " tick") end)
  end,]]

    it("keep the function they were given", function()
      local srv, path = start(v1)
      local a = srv:connect("/")
      a:send("start")
      srv:advance(100)
      assert.same({ "v1 tick" }, a:messages())
      helpers.write_file(path, script([[
  on_message = function() end,]]))
      assert.is_true(srv:reload())
      srv:advance(200)
      assert.same({ "v1 tick", "v1 tick" }, a:messages())
    end)

    it("are re-armed or cancelled by on_reload", function()
      local srv, path = start(v1)
      local a = srv:connect("/")
      a:send("start")
      helpers.write_file(path, script([[
  ticker = ws.every(100, function() ws.broadcast("all", "v2 tick") end),
  on_reload = function(old)
    if old.ticker then
      old.ticker:cancel()
    end
  end,]]))
      assert.is_true(srv:reload())
      assert.equals(1, srv:stats().timers)
      srv:advance(200)
      assert.same({ "v2 tick", "v2 tick" }, a:messages())
    end)

    it("are cancelled when started by a version that failed to load", function()
      local srv, path = start(v1)
      local a = srv:connect("/")
      a:send("start")
      helpers.write_file(path, script([[
  ticker = ws.every(100, function() ws.broadcast("all", "v2 tick") end),
  on_reload = function(old)
    H.late = ws.after(50, function() ws.broadcast("all", "v2 late") end)
    error("cannot migrate")
  end,]]))
      helpers.with_logs(function()
        assert.is_nil(srv:reload())
      end)
      assert.equals(1, srv:stats().timers)
      srv:advance(200)
      assert.same({ "v1 tick", "v1 tick" }, a:messages())
    end)
  end)

  it("holds 100,000 pending timers, which cost nothing until due", function()
    local srv = start([[
  on_message = function(conn, msg)
    if msg == "arm" then
      for i = 1, 100000 do
        ws.after(60000 + i % 1000, function() end)
      end
      conn:send("armed")
    else
      conn:send(msg)
    end
  end,]])
    local a = srv:connect("/")
    a:send("arm")
    assert.same({ "armed" }, a:messages())
    assert.equals(100000, srv:stats().timers)
    a:send("echo")
    assert.equals("echo", a:next())
    srv:advance(61000)
    assert.equals(0, srv:stats().timers)
  end)

  it("drops pending timers when the server shuts down", function()
    local srv = start([[
  on_connect = function(conn)
    ws.every(10, function() error("must not run") end)
    ws.after(10000, function() error("must not run either") end)
  end,]])
    srv:connect("/")
    assert.equals(2, srv:stats().timers)
    -- What SIGTERM does, before the clients have answered.
    srv._sim:shutdown()
    assert.equals(0, srv._sim:stats().timers)
    assert.is_nil(srv._sim:timer_due())
    srv:close()
  end)

  it("shows timer handles as moonroom.timer(ID)", function()
    local srv = start([[
  on_connect = function(conn)
    local t = ws.after(10, function() end)
    conn:send(tostring(t) .. " " .. getmetatable(t))
  end,]])
    local a = srv:connect("/")
    assert.matches("^moonroom%.timer%(%d+%) moonroom%.timer$", a:next())
  end)
  it("counts script timers only, not the presence batch that shares the heap", function()
    local helpers = require "helpers"
    local srv, conn = helpers.eval_server("/")
    assert.equals("ok true", helpers.eval(conn, 'return ws.track(conn, "r", { n = 1 })'))
    assert.equals("ok 0", helpers.eval(conn, "return ws.stats().timers"))
    assert.equals(0, srv:stats().timers)
    assert.equals("ok", helpers.eval(conn, "keep.t = ws.after(1000, function() end)"))
    assert.equals(1, srv:stats().timers)
    srv:advance(50) -- the presence batch goes; the script's timer stays
    assert.equals(1, srv:stats().timers)
    srv:close()
  end)
end)

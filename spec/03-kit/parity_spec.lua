-- The kit and the real server agree.
--
-- Each case here replays, through the kit, an integration test that drives
-- the real moonroom binary over real sockets (tests/integration/), and
-- asserts the same transcript. The scripts are the very files those tests
-- load. If the kit ever drifts from the server, one side of a pair fails.
local helpers = require "helpers"
local testing = require "moonroom.testing"

local CHAT = "scripts/chat.lua"
local ECHO = "scripts/echo.lua"
local CMD = "tests/integration/scripts/cmd.lua"
local NOREQUIRE = "tests/integration/scripts/norequire.lua"

-- quiet(ws) in test_scripts.py: nothing more arrives.
local function assert_quiet(conn)
  assert.same({}, conn:messages(), "unexpected messages for conn " .. conn.id)
end

describe("parity with tests/integration/test_scripts.py (chat.lua)", function()
  local srv

  before_each(function()
    srv = testing.server(CHAT)
  end)

  after_each(function()
    srv:close()
  end)

  it("test_chat_room_broadcast_includes_sender", function()
    local alice = srv:connect("/?room=r1&name=alice")
    local bob = srv:connect("/?room=r1&name=bob")
    local carol = srv:connect("/?room=r2&name=carol")
    assert.equals("* bob joined", alice:next())
    alice:send("hi all")
    assert.equals("alice: hi all", alice:next())
    assert.equals("alice: hi all", bob:next())
    bob:send("hey")
    assert.equals("bob: hey", alice:next())
    assert.equals("bob: hey", bob:next())
    carol:send("anyone?")
    assert.equals("carol: anyone?", carol:next())
    assert_quiet(alice)
    assert_quiet(bob)
    -- Leaving the inner `async with`: carol, then bob, close normally.
    carol:close()
    bob:close()
    assert.equals("* bob left", alice:next())
    assert_quiet(alice)
  end)

  it("test_chat_default_room_is_lobby", function()
    local dora = srv:connect("/?name=dora")
    local eve = srv:connect("/?room=lobby&name=eve")
    assert.equals("* eve joined", dora:next())
    dora:send("in the lobby")
    assert.equals("dora: in the lobby", eve:next())
    assert.equals("dora: in the lobby", dora:next())
  end)

  it("test_chat_commands", function()
    local ann = srv:connect("/?room=hall&name=ann")
    local ben = srv:connect("/?room=hall&name=ben")
    assert.equals("* ben joined", ann:next())
    ann:send("/who")
    assert.equals("* here: ann, ben", ann:next())
    ann:send("/rooms")
    assert.equals("* rooms: hall", ann:next())
    ann:send("/nick annie")
    assert.equals("* ann is now annie", ann:next())
    assert.equals("* ann is now annie", ben:next())
    ann:send("renamed")
    assert.equals("annie: renamed", ben:next())
    assert.equals("annie: renamed", ann:next())
    ann:send("/join kitchen")
    assert.equals("* annie left", ben:next())
    assert.equals("* you are in kitchen", ann:next())
    ann:send("/rooms")
    assert.equals("* rooms: kitchen", ann:next())
    ben:send("alone?")
    assert.equals("ben: alone?", ben:next())
    assert_quiet(ann)
    ann:send("/frobnicate")
    assert.matches("^! ", ann:next())
    ann:send("\0binary", true)
    assert.matches("^! ", ann:next())
  end)

  it("test_chat_refuses_bad_room", function()
    local conn, status = srv:try_connect("/?room=has%20space&name=x")
    assert.is_nil(conn)
    assert.equals(400, status)
  end)
end)

describe("parity with tests/integration/test_scripts.py (echo.lua)", function()
  local srv

  before_each(function()
    srv = testing.server(ECHO)
  end)

  after_each(function()
    srv:close()
  end)

  it("test_echo_text_and_binary", function()
    local ws = srv:connect("/")
    ws:send("hello")
    assert.same({ data = "hello", binary = false }, ws:next_record())
    ws:send("\0\255bin", true)
    assert.same({ data = "\0\255bin", binary = true }, ws:next_record())
    ws:send("ünïcödé ✓")
    assert.equals("ünïcödé ✓", ws:next())
  end)

  it("test_echo_large_and_many", function()
    local ws = srv:connect("/")
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local big = table.concat(bytes):rep(2048) -- 512 KiB
    ws:send(big, true)
    assert.is_true(ws:next() == big)
    for i = 0, 99 do ws:send("m" .. i) end
    for i = 0, 99 do assert.equals("m" .. i, ws:next()) end
  end)

  it("test_echo_fragmented_raw", function()
    local c = srv:connect("/")
    c:send_frame(0x2, "ab", { fin = false })
    c:send_frame(0x0, "cd")
    assert.same({ data = "abcd", binary = true }, c:next_record())
    c:send_frame(0x1, "fr", { fin = false })
    c:send_frame(0x0, "ag")
    assert.same({ data = "frag", binary = false }, c:next_record())
    c:close()
  end)

  it("test_echo_many_concurrent_clients", function()
    local clients = {}
    for i = 1, 20 do clients[i] = srv:connect("/") end
    for j = 0, 19 do
      for i, ws in ipairs(clients) do
        ws:send(i .. "-" .. j)
        assert.equals(i .. "-" .. j, ws:next())
      end
    end
  end)
end)

describe("parity with tests/integration/test_handlers.py (cmd.lua)", function()
  local srv

  before_each(function()
    srv = testing.server(CMD)
  end)

  after_each(function()
    srv:close()
  end)

  local function observer()
    local obs = srv:connect("/")
    obs:send("join:observers")
    assert.equals("joined:observers", obs:next())
    return obs
  end

  local function parse_req(text)
    local out = {}
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      local k, v = line:match("^([^=]*)=(.*)$")
      out[k] = v
    end
    return out
  end

  it("test_request_path_query_headers_remote", function()
    local c = srv:connect("/some/path?a=1&b=hello%20world&slash=%2Fx%2F&e=%C3%A9", {
      headers = { { "X-Custom-Header", "  Value One  " }, { "X-Other", "2" } } })
    c:send("req")
    local req = parse_req(c:next())
    assert.equals("/some/path", req["path"])
    assert.equals("1", req["q.a"])
    assert.equals("hello world", req["q.b"])
    assert.equals("/x/", req["q.slash"])
    assert.equals("é", req["q.e"])
    assert.equals("Value One", req["h.x-custom-header"])
    assert.equals("2", req["h.x-other"])
    assert.equals("websocket", req["h.upgrade"]:lower())
    assert.equals("13", req["h.sec-websocket-version"])
    assert.equals("127.0.0.1", req["remote"])
  end)

  it("test_on_connect_false_refuses_with_403", function()
    local _, status = srv:try_connect("/?refuse=1")
    assert.equals(403, status)
  end)

  it("test_on_connect_refusal_status_and_body", function()
    for _, status in ipairs { 401, 403, 404, 429, 503 } do
      local conn, got, body, res = srv:try_connect("/?refuse=1&status=" .. status)
      assert.is_nil(conn)
      assert.equals(status, got)
      assert.matches("go away", body)
      assert.is_nil(res.headers["sec-websocket-accept"])
    end
  end)

  it("test_refused_connection_gets_no_on_close", function()
    local obs = observer()
    srv:try_connect("/?refuse=1")
    assert_quiet(obs)
  end)

  it("test_error_in_on_connect_gives_500", function()
    helpers.with_logs(function()
      local _, status = srv:try_connect("/?crash=1")
      assert.equals(500, status)
    end)
    local c = srv:connect("/")
    c:send("after crash")
    assert.equals("after crash", c:next())
  end)

  it("test_error_in_on_message_closes_with_1011", function()
    local other = srv:connect("/")
    local before = srv:stats().handler_errors
    local c = srv:connect("/")
    helpers.with_logs(function() c:send("error") end)
    assert.equals(1011, c.close_code)
    assert.is_true(c.closed)
    other:send("still here")
    assert.equals("still here", other:next())
    assert.equals(before + 1, srv:stats().handler_errors)
  end)

  it("test_handler_error_reported_to_on_close", function()
    local obs = observer()
    local c = srv:connect("/")
    helpers.with_logs(function() c:send("error") end)
    assert.same({ "closeinfo:" .. c.id .. ":", "closed:" .. c.id .. ":1011:handler error" },
      obs:messages())
  end)

  it("test_stale_handle_methods_return_nil_closed", function()
    local obs = observer()
    local a = srv:connect("/")
    local b = srv:connect("/")
    a:send("keep")
    assert.equals("kept:" .. a.id, a:next())
    a:close(1000)
    assert.equals("closed:" .. a.id .. ":1000:", obs:messages()[2])
    b:send("sendto:" .. a.id .. ":anyone there?")
    assert.equals("nil,closed", b:next())
    b:send("closeother:" .. a.id)
    assert.equals("nil,closed", b:next())
    b:send("alive")
    assert.equals("alive", b:next())
  end)

  it("test_stale_handle_after_tcp_drop", function()
    local a = srv:connect("/")
    local b = srv:connect("/")
    a:send("keep")
    a:drop()
    b:send("sendto:" .. a.id .. ":x")
    assert.equals("nil,closed", b:next())
  end)

  it("test_server_close_with_code_and_reason", function()
    local obs = observer()
    local c = srv:connect("/")
    c:send("close:4000:bye")
    assert.equals(4000, c.close_code)
    assert.equals("bye", c.close_reason)
    assert.equals("closed:" .. c.id .. ":4000:bye", obs:messages()[2])
  end)

  it("test_client_close_code_and_reason_seen_by_on_close", function()
    local obs = observer()
    local c = srv:connect("/")
    c:close(4000, "bye")
    assert.equals("closed:" .. c.id .. ":4000:bye", obs:messages()[2])
  end)

  it("test_state_is_per_connection", function()
    local a = srv:connect("/")
    local b = srv:connect("/")
    a:send("state:set:apple")
    assert.equals("ok", a:next())
    b:send("state:get")
    assert.equals("nil", b:next())
    b:send("state:set:banana")
    a:send("state:get")
    assert.equals("apple", a:next())
  end)

  it("test_conn_methods_work_without_require", function()
    local other = testing.server(NOREQUIRE)
    local c = other:connect("/")
    c:send("a")
    assert.equals("a#1", c:next())
    c:send("b")
    assert.equals("b#2", c:next())
    c:send("bye")
    assert.equals(4001, c.close_code)
    assert.equals("bye", c.close_reason)
    other:close()
  end)
end)

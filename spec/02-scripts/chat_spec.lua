-- scripts/chat.lua, run by the busted kit against the real core: real rooms,
-- real handshake, real frames. (spec/03-kit/parity_spec.lua replays the
-- integration tests' transcript for the same script.)
local testing = require "moonroom.testing"

describe("scripts/chat.lua", function()
  local srv

  before_each(function()
    srv = testing.server("scripts/chat.lua")
  end)

  after_each(function()
    srv:close()
  end)

  local function join(room, name)
    return srv:connect("/?room=" .. room .. "&name=" .. name)
  end

  describe("connecting", function()
    it("joins the room from the query and announces the newcomer to the others", function()
      local ada = join("r1", "ada")
      local bob = join("r1", "bob")
      assert.same({ ada.id, bob.id }, srv:members("r1"))
      assert.same({ "* bob joined" }, ada:messages())
      assert.same({}, bob:messages())
    end)

    it("does not announce to other rooms", function()
      local ada = join("r1", "ada")
      join("r2", "bob")
      assert.same({}, ada:messages())
    end)

    it("defaults to the lobby and a guest name", function()
      local c = srv:connect("/")
      assert.same({ "lobby" }, c:rooms())
      local d = srv:connect("/")
      assert.same({ "* guest" .. d.id .. " joined" }, c:messages())
    end)

    it("cleans names: no spaces or control characters, at most 32 bytes", function()
      local ada = join("r", "ada")
      join("r", "b%20o%09b")
      srv:connect("/?room=r&name=" .. string.rep("x", 33))
      srv:connect("/?room=r&name=%20")
      assert.same({ "* bob joined", "* guest3 joined", "* guest4 joined" }, ada:messages())
    end)

    it("refuses a bad room name with 400", function()
      for _, room in ipairs { "a%20b", "", string.rep("r", 65), "tab%09bed" } do
        local c, status, body = srv:try_connect("/?room=" .. room)
        assert.is_nil(c)
        assert.equals(400, status)
        assert.equals("room must be 1-64 characters without spaces", body)
      end
      assert.same({}, srv:room_names())
    end)

    it("refuses a name or room that is not UTF-8 with 400, and the room hears nothing", function()
      local ada = join("r", "ada")
      for _, target in ipairs { "/?room=r&name=%FF", "/?room=r&name=b%C3", "/?room=r&name=%ED%A0%80",
                                "/?room=r&name=%C0%80x" } do
        local c, status, body = srv:try_connect(target)
        assert.is_nil(c, target)
        assert.equals(400, status, target)
        assert.equals("name must be valid UTF-8", body, target)
      end
      for _, target in ipairs { "/?room=%FF&name=x", "/?room=r%E2%82&name=x" } do
        local c, status, body = srv:try_connect(target)
        assert.is_nil(c, target)
        assert.equals(400, status, target)
        assert.equals("room must be valid UTF-8", body, target)
      end
      assert.same({}, ada:received())
      assert.same({ ada.id }, srv:members("r"))
      assert.same({ "r" }, srv:room_names())
      assert.equals(0, srv:stats().lua_invalid_utf8)
      assert.equals(0, srv:stats().handler_errors)
    end)

    it("welcomes UTF-8 names and rooms", function()
      local ada = join("%C3%A9t%C3%A9", "ada")
      join("%C3%A9t%C3%A9", "Zo%C3%AB%F0%9F%98%80")
      assert.same({ "* Zoë😀 joined" }, ada:messages())
      assert.same({ "été" }, srv:room_names())
    end)

    it("accepts a 64-byte room name", function()
      local room = string.rep("r", 64)
      local c = srv:connect("/?room=" .. room)
      assert.same({ room }, c:rooms())
    end)
  end)

  describe("messages", function()
    it("go to the whole room, sender included, prefixed with the name", function()
      local ada = join("r", "ada")
      local bob = join("r", "bob")
      local cat = join("elsewhere", "cat")
      ada:messages()
      ada:send("hi")
      assert.same({ "ada: hi" }, ada:messages())
      assert.same({ "ada: hi" }, bob:messages())
      assert.same({}, cat:messages())
    end)

    it("keep their order", function()
      local ada = join("r", "ada")
      local bob = join("r", "bob")
      ada:messages()
      ada:send("one")
      bob:send("two")
      ada:send("three")
      local want = { "ada: one", "bob: two", "ada: three" }
      assert.same(want, ada:messages())
      assert.same(want, bob:messages())
    end)

    it("binary messages are refused with an error line to the sender only", function()
      local ada = join("r", "ada")
      local bob = join("r", "bob")
      ada:messages()
      ada:send("\0\1", true)
      assert.same({ { data = "! binary messages are not supported", binary = false } },
        ada:received())
      assert.same({}, bob:messages())
      assert.equals("open", ada.state)
    end)

    it("text that is not a command is just text", function()
      local ada = join("r", "ada")
      ada:send("/ not a command")
      ada:send("hello /who")
      assert.same({ "ada: / not a command", "ada: hello /who" }, ada:messages())
    end)
  end)

  describe("/join", function()
    it("moves rooms and tells both rooms", function()
      local ada = join("a", "ada")
      local bob = join("a", "bob")
      local cat = join("b", "cat")
      ada:messages()
      ada:send("/join b")
      assert.same({ "* ada left" }, bob:messages())
      assert.same({ "* ada joined" }, cat:messages())
      assert.same({ "* you are in b" }, ada:messages())
      assert.same({ "b" }, ada:rooms())
      assert.same({ bob.id }, srv:members("a"))
      assert.same({ ada.id, cat.id }, srv:members("b"))
    end)

    it("into a new room creates it and the old empty room goes", function()
      local ada = join("a", "ada")
      ada:send("/join fresh")
      assert.same({ "* you are in fresh" }, ada:messages())
      assert.same({ "fresh" }, srv:room_names())
    end)

    it("is case-insensitive", function()
      local ada = join("a", "ada")
      ada:send("/JOIN b")
      assert.same({ "* you are in b" }, ada:messages())
    end)

    it("into the current room does nothing", function()
      local ada = join("a", "ada")
      local bob = join("a", "bob")
      ada:messages()
      ada:send("/join a")
      assert.same({}, ada:messages())
      assert.same({}, bob:messages())
    end)

    it("answers a bad room with usage", function()
      local ada = join("a", "ada")
      for _, cmd in ipairs { "/join", "/join " .. string.rep("x", 65) } do
        ada:send(cmd)
        assert.equals("! usage: /join ROOM (1-64 characters, no spaces)", ada:next())
      end
      assert.same({ "a" }, ada:rooms())
    end)

    it("later messages go to the new room only", function()
      local ada = join("a", "ada")
      local bob = join("a", "bob")
      ada:send("/join b")
      bob:messages()
      ada:messages()
      ada:send("hi b")
      assert.same({ "ada: hi b" }, ada:messages())
      assert.same({}, bob:messages())
    end)
  end)

  describe("/nick", function()
    it("renames and tells the room, the renamed included", function()
      local ada = join("r", "ada")
      local bob = join("r", "bob")
      ada:messages()
      ada:send("/nick ada2")
      assert.same({ "* ada is now ada2" }, ada:messages())
      assert.same({ "* ada is now ada2" }, bob:messages())
      ada:send("hi")
      assert.equals("ada2: hi", bob:next())
    end)

    it("squeezes spaces out of the new name", function()
      local ada = join("r", "ada")
      ada:send("/nick Ada Lovelace")
      assert.same({ "* ada is now AdaLovelace" }, ada:messages())
    end)

    it("answers a bad name with usage and keeps the old one", function()
      local ada = join("r", "ada")
      for _, cmd in ipairs { "/nick", "/nick " .. string.rep("n", 33) } do
        ada:send(cmd)
        assert.equals("! usage: /nick NAME (1-32 characters, no spaces)", ada:next())
      end
      ada:send("still ada")
      assert.equals("ada: still ada", ada:next())
    end)
  end)

  describe("/who and /rooms", function()
    it("/who lists the room's names, sorted", function()
      local zed = join("r", "zed")
      join("r", "ada")
      join("r", "mia")
      join("other", "bob")
      zed:messages()
      zed:send("/who")
      assert.same({ "* here: ada, mia, zed" }, zed:messages())
    end)

    it("/who sees renames", function()
      local ada = join("r", "ada")
      join("r", "bob")
      ada:send("/nick ada2")
      ada:messages()
      ada:send("/who")
      assert.equals("* here: ada2, bob", ada:next())
    end)

    it("/rooms lists the sender's rooms", function()
      local ada = join("hall", "ada")
      ada:send("/rooms")
      assert.equals("* rooms: hall", ada:next())
      ada:send("/join kitchen")
      ada:messages()
      ada:send("/rooms")
      assert.equals("* rooms: kitchen", ada:next())
    end)
  end)

  it("answers an unknown command with an error line", function()
    local ada = join("r", "ada")
    ada:send("/dance")
    assert.same({ "! unknown command /dance" }, ada:messages())
  end)

  describe("leaving", function()
    it("announces a close to the room", function()
      local ada = join("r", "ada")
      local bob = join("r", "bob")
      ada:messages()
      bob:close()
      assert.same({ "* bob left" }, ada:messages())
      assert.same({ ada.id }, srv:members("r"))
      assert.equals(1000, bob.server_close_code)
    end)

    it("announces a dropped connection too", function()
      local ada = join("r", "ada")
      local bob = join("r", "bob")
      ada:messages()
      bob:drop()
      assert.same({ "* bob left" }, ada:messages())
    end)

    it("announces in the room it was in last, under its last name", function()
      local ada = join("a", "ada")
      local bob = join("a", "bob")
      local cat = join("b", "cat")
      bob:send("/join b")
      bob:send("/nick bobby")
      ada:messages()
      cat:messages()
      bob:close()
      assert.same({ "* bobby left" }, cat:messages())
      assert.same({}, ada:messages())
    end)

    it("the last one out leaves no room behind", function()
      local ada = join("r", "ada")
      ada:close()
      assert.same({}, srv:room_names())
    end)
  end)

  -- Plain HTTP beside the WebSockets: the room list and the publish API.
  -- The token comes from the environment, read when the script loads, so
  -- the spec sets it (the kit runs the script in this process) before the
  -- server starts.
  describe("over HTTP", function()
    local ffi = require "ffi"
    pcall(ffi.cdef, "int setenv(const char *, const char *, int); int unsetenv(const char *);")
    local AUTH = { Authorization = "Bearer s3cret" }

    local function with_token(token)
      srv:close()
      if token then
        ffi.C.setenv("CHAT_PUBLISH_TOKEN", token, 1)
      else
        ffi.C.unsetenv("CHAT_PUBLISH_TOKEN")
      end
      srv = testing.server("scripts/chat.lua")
      ffi.C.unsetenv("CHAT_PUBLISH_TOKEN")
    end

    it("serves the demo page and its files from scripts/chat/", function()
      local status, body, headers = srv:request("GET", "/?room=demo&name=ada")
      assert.equals(200, status)
      assert.equals("text/html; charset=utf-8", headers["content-type"])
      assert.matches("<title>moonroom chat</title>", body, 1, true)
      local f = assert(io.open("scripts/chat/chat.js", "rb"))
      local js = f:read("*a")
      f:close()
      status, body, headers = srv:request("GET", "/chat.js")
      assert.equals(200, status)
      assert.equals(js, body)
      assert.matches("^text/javascript", headers["content-type"])
      status, body, headers = srv:request("GET", "/chat.css")
      assert.equals(200, status)
      assert.matches("^text/css", headers["content-type"])
      assert.equals(405, (srv:request("POST", "/")))
    end)

    it("GET /rooms lists the rooms with their counts as JSON", function()
      local status, body, headers = srv:request("GET", "/rooms")
      assert.equals(200, status)
      assert.equals('{"rooms":[]}\n', body)
      assert.equals("application/json", headers["content-type"])
      join("r1", "ada")
      join("r1", "bob")
      join("r2", "cat")
      status, body = srv:request("GET", "/rooms")
      assert.equals(200, status)
      assert.same({ rooms = { { name = "r1", count = 2 }, { name = "r2", count = 1 } } },
        require("cjson").decode(body))
    end)

    it("POST /rooms/NAME/messages with the token reaches everyone in the room", function()
      with_token("s3cret")
      local ada = join("news", "ada")
      local bob = join("news", "bob")
      local cat = join("other", "cat")
      ada:messages()
      local status, body, headers = srv:request("POST", "/rooms/news/messages",
        { headers = AUTH, body = "deploy finished" })
      assert.equals(202, status)
      assert.equals('{"delivered":2}\n', body)
      assert.equals("application/json", headers["content-type"])
      assert.same({ "[api] deploy finished" }, ada:messages())
      assert.same({ "[api] deploy finished" }, bob:messages())
      assert.same({}, cat:messages())
    end)

    it("decodes the room name and counts 0 for an empty room", function()
      with_token("s3cret")
      local ada = join("a%2Fb", "ada")
      assert.same({ "a/b" }, ada:rooms())
      assert.equals('{"delivered":1}\n', select(2, srv:request("POST", "/rooms/a%2Fb/messages",
        { headers = AUTH, body = "hi" })))
      assert.same({ "[api] hi" }, ada:messages())
      assert.equals('{"delivered":0}\n', select(2, srv:request("POST", "/rooms/nobody/messages",
        { headers = AUTH, body = "hi" })))
    end)

    it("refuses a missing or wrong token with 401 and delivers nothing", function()
      with_token("s3cret")
      local ada = join("news", "ada")
      for _, headers in ipairs {
        {},
        { Authorization = "Bearer wrong" },
        { Authorization = "Bearer s3cre" },
        { Authorization = "Basic s3cret" },
      } do
        local status, body, h = srv:request("POST", "/rooms/news/messages",
          { headers = headers, body = "x" })
        assert.equals(401, status)
        assert.equals("a valid Authorization: Bearer token is required\n", body)
        assert.equals('Bearer realm="chat"', h["www-authenticate"])
      end
      assert.same({}, ada:messages())
    end)

    it("is disabled (403) when the server has no CHAT_PUBLISH_TOKEN", function()
      with_token(nil)
      local ada = join("news", "ada")
      local status, body = srv:request("POST", "/rooms/news/messages",
        { headers = AUTH, body = "x" })
      assert.equals(403, status)
      assert.matches("publishing is disabled", body)
      assert.same({}, ada:messages())
    end)

    it("refuses a message that is empty or not UTF-8, and a bad room, with 400", function()
      with_token("s3cret")
      local ada = join("news", "ada")
      for _, case in ipairs {
        { "/rooms/news/messages", "", "the message (the request body) is empty\n" },
        { "/rooms/news/messages", "\255\254", "the message must be valid UTF-8\n" },
        { "/rooms/a%20b/messages", "x", "room must be 1-64 characters of UTF-8 without spaces\n" },
        { "/rooms/%FF/messages", "x", "room must be 1-64 characters of UTF-8 without spaces\n" },
      } do
        local status, body = srv:request("POST", case[1], { headers = AUTH, body = case[2] })
        assert.equals(400, status)
        assert.equals(case[3], body)
      end
      assert.same({}, ada:messages())
    end)

    it("answers a wrong method with 405 and Allow, other paths with 404", function()
      with_token("s3cret")
      local status, _, headers = srv:request("GET", "/rooms/news/messages", { headers = AUTH })
      assert.equals(405, status)
      assert.equals("POST", headers.allow)
      status, _, headers = srv:request("DELETE", "/rooms")
      assert.equals(405, status)
      assert.equals("GET, HEAD", headers.allow)
      assert.equals(404, (srv:request("GET", "/index.html")))
      assert.equals(404, (srv:request("GET", "/nothing/here")))
    end)

    it("answers HEAD /rooms with the GET answer's headers and no body", function()
      local status, body, headers = srv:request("HEAD", "/rooms")
      assert.equals(200, status)
      assert.equals("", body)
      assert.equals(tostring(#'{"rooms":[]}\n'), headers["content-length"])
    end)
  end)
end)

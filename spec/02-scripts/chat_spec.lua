local helpers = require "helpers"

-- Loads scripts/chat.lua against a fake core: these specs check the script's
-- own logic; the busted kit's specs check it against the real core.
local function load_chat(core)
  helpers.load_moonroom(core)
  return dofile("scripts/chat.lua")
end

describe("scripts/chat.lua", function()
  local core, chat

  before_each(function()
    core = helpers.fake_core()
    chat = load_chat(core)
  end)

  local function connect(query)
    local conn = helpers.fake_conn()
    local ok = chat.on_connect(conn, { path = "/", query = query or {}, headers = {} })
    return conn, ok
  end

  it("joins the room from the query and announces the newcomer to others", function()
    local ada = connect { room = "r1", name = "ada" }
    local bob = connect { room = "r1", name = "bob" }
    assert.spy(core.join).was.called_with(bob, "r1")
    assert.same({ "* bob joined" }, ada.inbox)
    assert.same({}, bob.inbox)
  end)

  it("defaults to the lobby and a guest name", function()
    local c = connect()
    assert.equals("lobby", c.state.room)
    assert.equals("guest" .. c.id, c.state.name)
  end)

  it("refuses a room name with spaces with 400", function()
    local ok, status = chat.on_connect(helpers.fake_conn(), { query = { room = "a b" } })
    assert.is_false(ok)
    assert.equals(400, status)
  end)

  it("broadcasts text to the whole room, sender included", function()
    local ada = connect { room = "r", name = "ada" }
    local bob = connect { room = "r", name = "bob" }
    chat.on_message(ada, "hi", false)
    assert.equals("ada: hi", ada.inbox[#ada.inbox])
    assert.equals("ada: hi", bob.inbox[#bob.inbox])
  end)

  it("moves rooms with /join and tells both rooms", function()
    local ada = connect { room = "a", name = "ada" }
    local bob = connect { room = "a", name = "bob" }
    local cat = connect { room = "b", name = "cat" }
    chat.on_message(ada, "/join b", false)
    assert.equals("b", ada.state.room)
    assert.equals("* ada left", bob.inbox[#bob.inbox])
    assert.equals("* ada joined", cat.inbox[#cat.inbox])
    assert.equals("* you are in b", ada.inbox[#ada.inbox])
  end)

  it("renames with /nick and lists people with /who", function()
    local ada = connect { room = "r", name = "ada" }
    connect { room = "r", name = "bob" }
    chat.on_message(ada, "/nick ada2", false)
    chat.on_message(ada, "/who", false)
    assert.equals("* here: ada2, bob", ada.inbox[#ada.inbox])
  end)

  it("answers unknown commands and binary messages with an error line", function()
    local ada = connect { name = "ada" }
    chat.on_message(ada, "/dance", false)
    assert.equals("! unknown command /dance", ada.inbox[#ada.inbox])
    chat.on_message(ada, "\0\1", true)
    assert.equals("! binary messages are not supported", ada.inbox[#ada.inbox])
  end)

  it("announces a departure to the room on close", function()
    local ada = connect { room = "r", name = "ada" }
    local bob = connect { room = "r", name = "bob" }
    core.leave(bob, "r") -- the server removes a closing connection first
    chat.on_close(bob, 1000, "")
    assert.equals("* bob left", ada.inbox[#ada.inbox])
  end)
end)

describe("scripts/echo.lua", function()
  it("sends every message back with its binary flag", function()
    local echo = dofile("scripts/echo.lua")
    local conn = helpers.fake_conn()
    local sent = {}
    function conn:send(msg, binary) sent[#sent + 1] = { msg, binary } end
    echo.on_message(conn, "text", false)
    echo.on_message(conn, "\0bin", true)
    assert.same({ { "text", false }, { "\0bin", true } }, sent)
  end)
end)

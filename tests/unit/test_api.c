/* The moonroom.core functions (core/api.c) that hold C logic of their own:
 * the UTF-8 checks at the Lua boundary, the room directory's order, and the
 * room state store and its drop.
 *
 * Two set-ups. The store and the directory are driven straight through a
 * lua_State of the test's own, with mr_api_open bound to a server whose
 * rooms are filled with bare members (no connections), so that the order
 * and the stack effects are checked without a script in between. Sending
 * and closing need real connections: those go through a handler script on
 * the virtual server (tests/unit/virtual_server.h). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <unistd.h>

#include "api.h"
#include "virtual_server.h"

/* ---- a bare lua_State over a server without a bridge --------------------- */

typedef struct {
  harness h;
  lua_State *L;
  mr_member members[8];
} bare;

static int bare_start(bare *b) {
  memset(b, 0, sizeof *b);
  if (h_init(&b->h, "/nonexistent.lua", no_opts) != 0)
    return -1;
  b->L = luaL_newstate();
  if (!b->L)
    return -1;
  luaL_openlibs(b->L);
  mr_api_open(b->L, b->h.srv);
  return luaL_dostring(b->L, "core = require 'moonroom.core'") == 0 ? 0 : -1;
}

static void bare_stop(bare *b) {
  for (size_t i = 0; i < sizeof b->members / sizeof *b->members; i++)
    mr_rooms_leave_all(&b->h.srv->rooms, &b->members[i]);
  lua_close(b->L);
  mr_server_free(b->h.srv);
  free(b->h.srv);
  CHECK_EQ_INT(uv_loop_close(&b->h.loop), 0);
}

/* Puts bare member i into room. */
static void bare_join(bare *b, int i, const char *room) {
  CHECK_EQ_INT(
      mr_rooms_join(&b->h.srv->rooms, &b->members[i], room, strlen(room)), 1);
}

static void bare_leave(bare *b, int i, const char *room) {
  CHECK_EQ_INT(
      mr_rooms_leave(&b->h.srv->rooms, &b->members[i], room, strlen(room)), 1);
}

/* Runs a chunk that returns one string and compares it with want; an error
 * is compared as "error: MESSAGE". */
static void expect_lua(bare *b, const char *chunk, const char *want, int line) {
  lua_State *L = b->L;
  int top = lua_gettop(L);
  const char *got;
  if (luaL_loadstring(L, chunk) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
    lua_pushfstring(L, "error: %s", lua_tostring(L, -1));
    got = lua_tostring(L, -1);
  } else {
    got = lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)";
  }
  if (!CHECK(strcmp(got, want) == 0))
    fprintf(stderr, "  line %d: got \"%s\", expected \"%s\"\n", line, got,
            want);
  lua_settop(L, top);
}

#define EXPECT_LUA(b, chunk, want) expect_lua((b), (chunk), (want), __LINE__)

/* Lists core.room_list() as "name=count,...". */
#define LIST                                                                   \
  "local out = {} for i, r in ipairs(core.room_list()) do "                    \
  "out[i] = r.name .. '=' .. r.count end return table.concat(out, ',')"

/* The directory is sorted by the bytes of the names: a prefix first,
 * upper case before lower, UTF-8 (bytes above 0x7F) after ASCII, whatever
 * order the hash table keeps them in. */
static void test_room_list_order(void) {
  bare b;
  if (!CHECK(bare_start(&b) == 0))
    return;
  EXPECT_LUA(&b, LIST, "");
  const char *rooms[] = {"b", "\xc3\xa4", "ab", "a", "B", "a\xc3\xa4", "b "};
  for (size_t i = 0; i < sizeof rooms / sizeof *rooms; i++)
    bare_join(&b, 0, rooms[i]);
  bare_join(&b, 1, "b");
  bare_join(&b, 2, "b");
  bare_join(&b, 1, "ab");
  EXPECT_LUA(&b, LIST, "B=1,a=1,ab=2,a\xc3\xa4=1,b=3,b =1,\xc3\xa4=1");
  bare_leave(&b, 0, "a");
  bare_leave(&b, 0, "b");
  EXPECT_LUA(&b, LIST, "B=1,ab=2,a\xc3\xa4=1,b=2,b =1,\xc3\xa4=1");
  bare_stop(&b);
}

/* Many rooms, in the hash table's order: the list has them all, sorted. */
static void test_room_list_many(void) {
  bare b;
  if (!CHECK(bare_start(&b) == 0))
    return;
  char name[32];
  for (int i = 0; i < 2000; i++) {
    snprintf(name, sizeof name, "r%llu",
             (unsigned long long)(test_rng() % 1000000));
    mr_rooms_join(&b.h.srv->rooms, &b.members[i % 8], name, strlen(name));
  }
  char want[32];
  snprintf(want, sizeof want, "%zu true", b.h.srv->rooms.nrooms);
  EXPECT_LUA(&b,
             "local l, ok = core.room_list(), true "
             "for i = 2, #l do ok = ok and l[i - 1].name < l[i].name end "
             "return #l .. ' ' .. tostring(ok)",
             want);
  bare_stop(&b);
}

/* room_state: nil, "empty room" without members; one table per room while
 * it has members; after the drop a new one. The drop leaves the stack as it
 * was, and dropping a room that never had state is harmless. */
static void test_room_state_store(void) {
  bare b;
  if (!CHECK(bare_start(&b) == 0))
    return;
  lua_State *L = b.L;
  EXPECT_LUA(&b, "local s, e = core.room_state('r') return tostring(s)..e",
             "nilempty room");
  bare_join(&b, 0, "r");
  bare_join(&b, 1, "q");
  EXPECT_LUA(&b,
             "kept = core.room_state('r') kept.x = 1 "
             "return tostring(core.room_state('r') == kept) .. "
             "tostring(core.room_state('q') ~= kept)",
             "truetrue");
  int top = lua_gettop(L);
  mr_api_drop_room_state(L, "nothing", 7);
  CHECK_EQ_INT(lua_gettop(L), top);
  EXPECT_LUA(&b, "return tostring(core.room_state('r').x)", "1");
  /* The registry drops it; the room itself is still there here, so the
   * next call makes a fresh table. */
  mr_api_drop_room_state(L, "r", 1);
  CHECK_EQ_INT(lua_gettop(L), top);
  EXPECT_LUA(&b,
             "local s = core.room_state('r') "
             "return tostring(s == kept) .. tostring(s.x)",
             "falsenil");
  bare_stop(&b);
}

/* The UTF-8 checks of the functions that need no connection: room names
 * and broadcast text, each refusal counted, binary never checked. */
static void test_utf8_room_and_broadcast(void) {
  bare b;
  if (!CHECK(bare_start(&b) == 0))
    return;
  EXPECT_LUA(&b, "return tostring(core.count('ok\\226\\130\\172'))", "0");
  EXPECT_LUA(&b, "return core.count('bad\\226\\130')",
             "error: bad argument #1 to '?' (room name is not valid UTF-8)");
  EXPECT_LUA(&b, "local n = core.broadcast('r', '\\255') return n",
             "error: [string \"local n = core.broadcast('r', '\\255') "
             "return n\"]:1: bad argument #2 to 'broadcast' (text is not "
             "valid UTF-8; send bytes as binary)");
  EXPECT_LUA(&b, "local n = core.broadcast('r', '\\255', true) return n", "0");
  EXPECT_LUA(&b, "local n = core.broadcast('r', 'caf\\195\\169') return n",
             "0");
  CHECK_EQ_INT(b.h.srv->stats.lua_invalid_utf8, 2);
  CHECK_EQ_INT(b.h.srv->stats.broadcasts, 2);
  EXPECT_LUA(&b,
             "return tostring(core.utf8_valid('\\240\\159\\152\\128')) .. "
             "tostring(core.utf8_valid('\\244\\144\\128\\128'))",
             "truefalse");
  bare_stop(&b);
}

/* ---- sending and closing, through a script ------------------------------- */

static char script_path[64];

/* "send", "bin", "close" and "sendok" try what their names say with bytes
 * that are not UTF-8 (sendok with valid ones) and answer with the error. */
static const char script_src[] =
    "local ws = require 'moonroom'\n"
    "return { on_message = function(conn, msg)\n"
    "  if msg == 'send' then\n"
    "    local ok, err = pcall(ws.send, conn, 'a\\192\\128')\n"
    "    conn:send(err)\n"
    "  elseif msg == 'bin' then\n"
    "    conn:send('a\\192\\128', true)\n"
    "  elseif msg == 'close' then\n"
    "    local ok, err = pcall(ws.close, conn, 4000, '\\237\\160\\128')\n"
    "    conn:send(err)\n"
    "  elseif msg == 'raise' then\n"
    "    conn:send('\\255')\n"
    "  end\n"
    "end }\n";

static int write_script(void) {
  return write_temp_script(script_path, sizeof script_path, script_src);
}

static void test_utf8_send_and_close(void) {
  harness h;
  if (!CHECK(h_start(&h, script_path, no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  send_text(&h, id, "send");
  EXPECT_TEXT(&h, id,
              "bad argument #2 to '?' (text is not valid UTF-8; send bytes "
              "as binary)");
  send_text(&h, id, "bin");
  expect_frame(&h, id, MR_OP_BINARY, "a\xc0\x80", 3, __LINE__);
  send_text(&h, id, "close");
  EXPECT_TEXT(&h, id,
              "bad argument #3 to '?' (close reason is not valid UTF-8)");
  CHECK(mr_conn_find(h.srv, id) != NULL);
  CHECK_EQ_INT(h.srv->stats.lua_invalid_utf8, 2);
  /* Not caught: the handler error closes this connection with 1011, and
   * the invalid text never reaches the wire. */
  send_text(&h, id, "raise");
  expect_close(&h, id, 1011, "handler error", __LINE__);
  CHECK_EQ_INT(h.srv->stats.handler_errors, 1);
  CHECK_EQ_INT(h.srv->stats.lua_invalid_utf8, 3);
  h_stop(&h);
}

int main(void) {
  /* The handler error below is expected; its log line would be noise. */
  mr_log_set_level((enum mr_log_level)(MR_LOG_ERROR + 1));
  if (write_script() != 0) {
    fprintf(stderr, "cannot write %s\n", script_path);
    return 1;
  }
  test_room_list_order();
  test_room_list_many();
  test_room_state_store();
  test_utf8_room_and_broadcast();
  test_utf8_send_and_close();
  unlink(script_path);
  return test_report();
}

/* Connection handles (core/handle.c): how Lua names a connection, and the
 * one test of "open" that every API function uses. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "virtual_server.h"

static char script_path[64];

/* A script that answers every message with tostring(conn) and whether
 * conn.open holds. */
static const char script_src[] =
    "return { on_message = function(conn, msg)\n"
    "  if msg == 'name' then conn:send(tostring(conn)) end\n"
    "end }\n";

static int write_script(void) {
  return write_temp_script(script_path, sizeof script_path, script_src);
}

/* Ids are 64-bit and pass 2^31 on a long-lived server; tostring must print
 * them whole. (It once went through lua_pushfstring's %d, an int.) */
static void test_tostring_64_bit_id(void) {
  harness h;
  if (!CHECK(h_start(&h, script_path, no_opts) == 0))
    return;
  h.srv->next_id = UINT64_C(5000000000);
  uint64_t id = open_ws(&h, "/");
  CHECK_EQ_INT(id, UINT64_C(5000000001));
  send_text(&h, id, "name");
  EXPECT_TEXT(&h, id, "moonroom.conn(5000000001)");
  h_stop(&h);
}

/* A connection doomed to close at the next safe point is not open: nothing
 * may be queued for it, and every API call treats it as closed. */
static void test_doomed_is_not_open(void) {
  harness h;
  if (!CHECK(h_start(&h, script_path, no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK(c != NULL && mr_conn_is_open(c));
  mr_conn_doom(c, MR_CLOSE_POLICY, "test");
  CHECK(!mr_conn_is_open(c));
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_close(c, 1000, "", 0), MR_ECLOSED);
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  h_stop(&h);
}

int main(void) {
  if (write_script() != 0) {
    fprintf(stderr, "cannot write %s\n", script_path);
    return 1;
  }
  test_tostring_64_bit_id();
  test_doomed_is_not_open();
  unlink(script_path);
  return test_report();
}

/* Unit tests for the abuse limits on real (virtual) connections: the
 * per-address slots of --max-connections-per-ip released exactly once on
 * every way a connection ends, the 429; --allow-origin's 403; the message
 * rate's 1008 and, for plain HTTP, 429. Everything before Lua runs.
 *
 * The harness (virtual_server.h) runs the real server, bridge and
 * connections without sockets; its loop never runs, so the test moves the
 * loop clock itself for the token bucket. */
#include "virtual_server.h"

#include "ipcount.h"

static const char script_src[] =
    "local ws = require 'moonroom'\n"
    "calls = 0\n"
    "return {\n"
    "  on_connect = function(conn, req)\n"
    "    calls = calls + 1\n"
    "    ws.join(conn, 'all')\n"
    "    if req.query.refuse then return false end\n"
    "  end,\n"
    "  on_message = function(conn, msg)\n"
    "    if msg == 'calls' then return conn:send(string.format('%d', calls)) "
    "end\n"
    "    calls = calls + 1\n"
    "    conn:send(msg)\n"
    "  end,\n"
    "  on_http = function(req) calls = calls + 1; return 200, 'ok' end,\n"
    "}\n";

static char script[64];
static harness h;
static uint8_t out[8192];
static uint64_t probe; /* see lua_calls */

static int start(const char *const *opts) {
  probe = 0;
  return CHECK(h_start(&h, script, opts) == 0);
}

static const char *taken(uint64_t id) {
  size_t n = take(&h, id, out, sizeof out - 1);
  out[n] = '\0';
  return (const char *)out;
}

/* A virtual connection from addr that has sent req (NULL: nothing). */
static uint64_t open_from(const char *addr, const char *req) {
  mr_conn *c = mr_conn_new_virtual(h.srv);
  if (!CHECK(c != NULL) || !CHECK(mr_conn_set_virtual_remote(c, addr) == 0))
    return 0;
  uint64_t id = c->id;
  if (req)
    feed(&h, c, req, strlen(req));
  return id;
}

static const char upgrade_head[] = "GET / HTTP/1.1\r\n"
                                   "Host: example.test\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n"
                                   "Sec-WebSocket-Key: " KEY "\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "\r\n";

static uint64_t ws_from(const char *addr) {
  uint64_t id = open_from(addr, upgrade_head);
  CHECK_STR(taken(id), RESP_101);
  mr_conn *c = mr_conn_find(h.srv, id);
  return CHECK(c && mr_conn_is_open(c)) ? id : 0;
}

/* The slots the table holds, summed, and the connections that hold one:
 * always equal. */
static void check_slots(int line) {
  unsigned long long held = 0, counted = 0;
  size_t pos = 0;
  for (mr_conn *c; (c = mr_conn_next(h.srv, &pos));)
    held += c->x && c->x->ip;
  for (mr_ipcount *e = h.srv->ip_counts; e; e = e->hh.next)
    counted += e->count;
  if (!test_record(held == counted, __FILE__, line, "slots == holders"))
    fprintf(stderr, "  table %llu, connections %llu\n", counted, held);
}

/* How many times the script's handlers have run, asked over a probe
 * connection of its own (which counts once, when it opens). */
static long lua_calls(void) {
  if (!probe || !mr_conn_find(h.srv, probe))
    probe = ws_from("203.0.113.250");
  send_text(&h, probe, "calls");
  const char *s = taken(probe);
  /* An unmasked server text frame: two header bytes, then the digits. */
  return strlen(s) > 2 ? strtol(s + 2, NULL, 10) : -1;
}

/* ---- --max-connections-per-ip ------------------------------------------- */

static void test_ip_limit(void) {
  const char *const opts[] = {"--max-connections-per-ip", "2", NULL};
  if (!start(opts))
    return;
  uint64_t a = ws_from("10.0.0.1"), b = ws_from("10.0.0.1");
  CHECK(a && b);
  /* The third from the address is answered 429 before Lua runs. */
  long calls = lua_calls();
  uint64_t c = open_from("10.0.0.1", upgrade_head);
  const char *resp = taken(c);
  CHECK(strncmp(resp, "HTTP/1.1 429 Too Many Requests\r\n", 32) == 0);
  CHECK(strstr(resp, "\r\nRetry-After: 10\r\n") != NULL);
  CHECK(strstr(resp, "too many connections from this address") != NULL);
  CHECK(mr_conn_find(h.srv, c) == NULL); /* closed once written */
  CHECK_EQ_INT(h.srv->stats.connections_per_ip_refused, 1);
  CHECK(lua_calls() == calls);
  /* A plain HTTP request over the limit too: on_http does not run. */
  c = open_from("10.0.0.1", "GET /x HTTP/1.1\r\n\r\n");
  CHECK(strncmp(taken(c), "HTTP/1.1 429 ", 13) == 0);
  CHECK_EQ_INT(h.srv->stats.http_requests, 0);
  /* A handshake not yet complete holds a slot: counted from accept. */
  uint64_t half = open_from("10.0.0.2", "GET / HT");
  ws_from("10.0.0.2");
  c = open_from("10.0.0.2", upgrade_head);
  CHECK(strncmp(taken(c), "HTTP/1.1 429 ", 13) == 0);
  mr_conn_sweep(mr_conn_find(h.srv, half), UINT64_MAX); /* times out */
  CHECK(mr_conn_find(h.srv, half) == NULL);
  ws_from("10.0.0.2"); /* its slot is free again */
  /* IPv6 is counted per /64; a mapped IPv4 address as the IPv4 one. */
  ws_from("2001:db8:1:2::1");
  ws_from("2001:db8:1:2::2");
  c = open_from("2001:db8:1:2:ffff::9", upgrade_head);
  CHECK(strncmp(taken(c), "HTTP/1.1 429 ", 13) == 0);
  ws_from("2001:db8:1:3::1");
  ws_from("::ffff:10.0.0.3");
  ws_from("10.0.0.3");
  c = open_from("::ffff:10.0.0.3", upgrade_head);
  CHECK(strncmp(taken(c), "HTTP/1.1 429 ", 13) == 0);
  CHECK_EQ_INT(h.srv->stats.connections_per_ip_refused, 5);
  /* Closing one frees a slot. */
  send_close(&h, a, 1000, "");
  taken(a);
  CHECK(mr_conn_find(h.srv, a) == NULL);
  ws_from("10.0.0.1");
  check_slots(__LINE__);
  h_stop(&h);
}

/* Thousands of connections from a few hundred addresses, ended every way a
 * connection can end: the table's counts always match the connections that
 * hold a slot, and it is empty once they are gone. */
static void test_ip_release_every_path(void) {
  const char *const opts[] = {"--max-connections-per-ip", "3", NULL};
  if (!start(opts))
    return;
  enum { ROUNDS = 6000, HELD = 64 };
  uint64_t held[HELD] = {0};
  char addr[64];
  uint8_t bad[16];
  for (int i = 0; i < ROUNDS; i++) {
    int n = i % 97;
    if (n % 3 == 0)
      snprintf(addr, sizeof addr, "192.0.2.%d", n);
    else if (n % 3 == 1)
      snprintf(addr, sizeof addr, "2001:db8:%x::%x", n, i);
    else
      snprintf(addr, sizeof addr, "::ffff:198.51.100.%d", n);
    uint64_t id = 0;
    mr_conn *c;
    switch (i % 10) {
    case 0: /* a clean close handshake */
      if ((id = open_from(addr, upgrade_head)) && strstr(taken(id), " 101 ")) {
        send_close(&h, id, 1000, "bye");
        taken(id);
      }
      break;
    case 1: /* the socket drops (reset, EOF): an abrupt close */
      id = open_from(addr, upgrade_head);
      taken(id);
      if ((c = mr_conn_find(h.srv, id)))
        mr_conn_doom(c, MR_CLOSE_ABNORMAL, "");
      mr_server_flush(h.srv);
      break;
    case 2: /* the handshake times out */
      id = open_from(addr, "GET / HTTP/1.1\r\n");
      if ((c = mr_conn_find(h.srv, id)))
        mr_conn_sweep(c, UINT64_MAX);
      break;
    case 3: /* a protocol error: an unmasked frame */
      id = open_from(addr, upgrade_head);
      if (strstr(taken(id), " 101 ")) {
        c = mr_conn_find(h.srv, id);
        feed(&h, c, bad, client_frame(bad, 0x81, "x", 1, 0));
        taken(id);
      }
      break;
    case 4: /* a malformed request: 400 */
      id = open_from(addr, "BREW / HTCPCP/1.0\r\n\r\n");
      taken(id);
      break;
    case 5: /* refused by on_connect */
      id = open_from(addr, "GET /?refuse=1 HTTP/1.1\r\n"
                           "Host: x\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Key: " KEY "\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n");
      taken(id);
      break;
    case 6: /* plain HTTP, closed after the answer */
      id = open_from(addr, "GET /h HTTP/1.1\r\nConnection: close\r\n\r\n");
      taken(id);
      break;
    case 7: /* plain HTTP kept alive, then idle */
      id = open_from(addr, "GET /h HTTP/1.1\r\n\r\n");
      taken(id);
      if ((c = mr_conn_find(h.srv, id)))
        mr_conn_sweep(c, UINT64_MAX);
      mr_server_flush(h.srv);
      break;
    default: /* kept open a while, in place of an older one */
      id = open_from(addr, upgrade_head);
      taken(id);
      if (held[i % HELD] && (c = mr_conn_find(h.srv, held[i % HELD]))) {
        mr_conn_close(c, MR_CLOSE_GOING_AWAY, "later", 5);
        taken(held[i % HELD]);
      }
      held[i % HELD] = id;
      break;
    }
    if (i % 500 == 0)
      check_slots(__LINE__);
  }
  check_slots(__LINE__);
  CHECK(h.srv->ip_counts != NULL);
  CHECK(h.srv->stats.connections_per_ip_refused > 0);
  /* Shutdown: the rest are closed together. */
  size_t pos = 0;
  for (mr_conn *c; (c = mr_conn_next(h.srv, &pos));)
    mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "server shutting down");
  mr_server_flush(h.srv);
  CHECK(h.srv->conns.count == 0);
  CHECK(h.srv->ip_counts == NULL);
  CHECK_EQ_INT(mr_ipcount_size(&h.srv->ip_counts), 0);
  h_stop(&h);
}

/* Off (the default), nothing is counted and the table stays empty. */
static void test_ip_limit_off(void) {
  if (!start(no_opts))
    return;
  for (int i = 0; i < 10; i++)
    ws_from("10.0.0.1");
  CHECK(h.srv->ip_counts == NULL);
  h_stop(&h);
}

/* ---- --allow-origin ------------------------------------------------------ */

static uint64_t open_origin(const char *origin) {
  char req[512];
  snprintf(req, sizeof req,
           "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
           "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
           origin ? "Origin: " : "", origin ? origin : "",
           origin ? "\r\n" : "");
  return open_from("127.0.0.1", req);
}

static void test_origin(void) {
  const char *const opts[] = {
      "--allow-origin", "https://example.com,http://localhost:8080", NULL};
  if (!start(opts))
    return;
  CHECK_STR(taken(open_origin("https://example.com")), RESP_101);
  CHECK_STR(taken(open_origin("HTTPS://Example.com:443")), RESP_101);
  CHECK_STR(taken(open_origin("http://localhost:8080")), RESP_101);
  CHECK_STR(taken(open_origin(NULL)), RESP_101); /* not a browser */
  long calls = lua_calls();
  const char *resp = taken(open_origin("https://evil.test"));
  CHECK(strncmp(resp, "HTTP/1.1 403 Forbidden\r\n", 24) == 0);
  CHECK(strstr(resp, "origin not allowed") != NULL);
  CHECK(strncmp(taken(open_origin("http://localhost:8081")), "HTTP/1.1 403 ",
                13) == 0);
  CHECK(strncmp(taken(open_origin("null")), "HTTP/1.1 403 ", 13) == 0);
  CHECK(lua_calls() == calls);
  CHECK_EQ_INT(h.srv->stats.origins_refused, 3);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 0);
  h_stop(&h);
  /* "*" allows any. */
  const char *const any[] = {"--allow-origin", "*", NULL};
  if (!start(any))
    return;
  CHECK_STR(taken(open_origin("https://evil.test")), RESP_101);
  CHECK_EQ_INT(h.srv->stats.origins_refused, 0);
  h_stop(&h);
}

/* ---- --max-messages-per-second ------------------------------------------ */

static void test_message_rate(void) {
  const char *const opts[] = {"--max-messages-per-second", "2",
                              "--message-burst", "3", NULL};
  if (!start(opts))
    return;
  uint64_t id = ws_from("127.0.0.1");
  uint64_t other = ws_from("127.0.0.1");
  for (int i = 0; i < 3; i++)
    send_text(&h, id, "m");
  take(&h, id, out, sizeof out);
  /* Half a second later one more token is there, and no second one. */
  h.loop.time += 500;
  send_text(&h, id, "m");
  CHECK(strstr(taken(id), "m") != NULL);
  long calls = lua_calls();
  send_text(&h, id, "over");
  CHECK_EQ_INT(h.srv->stats.message_rate_closes, 1);
  CHECK(lua_calls() == calls); /* on_message did not run */
  size_t n = take(&h, id, out, sizeof out);
  /* A close frame: 1008 "message rate exceeded". */
  CHECK(n == 25 && out[0] == 0x88 && out[1] == 23 && out[2] == 0x03 &&
        out[3] == 0xF0 && memcmp(out + 4, "message rate exceeded", 21) == 0);
  /* The other connection has its own bucket. */
  send_text(&h, other, "fine");
  CHECK(strstr(taken(other), "fine") != NULL);
  /* Plain HTTP requests take tokens too: the fourth gets 429. */
  uint64_t x = open_from("127.0.0.1", "GET /1 HTTP/1.1\r\n\r\n"
                                      "GET /2 HTTP/1.1\r\n\r\n"
                                      "GET /3 HTTP/1.1\r\n\r\n"
                                      "GET /4 HTTP/1.1\r\n\r\n");
  const char *resp = taken(x);
  const char *refused = strstr(resp, "HTTP/1.1 429 Too Many Requests\r\n");
  CHECK(refused != NULL);
  CHECK(refused && strstr(refused, "\r\nRetry-After: 1\r\n") != NULL);
  CHECK_EQ_INT(h.srv->stats.http_requests, 3);
  CHECK_EQ_INT(h.srv->stats.message_rate_closes, 2);
  CHECK(mr_conn_find(h.srv, x) == NULL);
  h_stop(&h);
}

int main(void) {
  if (write_temp_script(script, sizeof script, script_src) != 0) {
    perror("script");
    return 2;
  }
  mr_log_set_level(MR_LOG_ERROR);
  test_ip_limit();
  test_ip_release_every_path();
  test_ip_limit_off();
  test_origin();
  test_message_rate();
  unlink(script);
  return test_report();
}

/* Unit tests for permessage-deflate negotiation (core/pmd.c): the offers of
 * the clients that matter, every parameter with and without values, quoted
 * values, several offers in order, and each reason to decline. */
#include <stdio.h>
#include <string.h>

#include "pmd.h"
#include "test_util.h"

/* Negotiates s against a server window of bits; returns 1 when accepted. */
static mr_pmd_agreement got;
static unsigned declined;
static const char *why;

static int offer(const char *s, unsigned bits) {
  declined = 0;
  why = NULL;
  memset(&got, 0, sizeof got);
  return mr_pmd_negotiate(s, strlen(s), bits, &got, &declined, &why);
}

static void test_clients_default_offers(void) {
  /* Chromium and Firefox. */
  CHECK_EQ_INT(offer("permessage-deflate; client_max_window_bits", 15), 1);
  CHECK_EQ_INT(got.server_bits, 15);
  CHECK_EQ_INT(got.answer_server_bits, 0);
  CHECK_EQ_INT(declined, 0);
  /* Node ws (perMessageDeflate: true). */
  CHECK_EQ_INT(offer("permessage-deflate; client_max_window_bits", 12), 1);
  CHECK_EQ_INT(got.server_bits, 12);
  /* Python websockets 10+: asks for a small server window. */
  CHECK_EQ_INT(offer("permessage-deflate; server_max_window_bits=12; "
                     "client_max_window_bits=12",
                     15),
               1);
  CHECK_EQ_INT(got.server_bits, 12);
  CHECK_EQ_INT(got.answer_server_bits, 1);
  /* The server's own window is smaller than what the client allows. */
  CHECK_EQ_INT(offer("permessage-deflate; server_max_window_bits=12", 10), 1);
  CHECK_EQ_INT(got.server_bits, 10);
  CHECK_EQ_INT(got.answer_server_bits, 1);
  /* Bare, and with every parameter. */
  CHECK_EQ_INT(offer("permessage-deflate", 15), 1);
  CHECK_EQ_INT(offer("permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover; server_max_window_bits=9; "
                     "client_max_window_bits=8",
                     15),
               1);
  CHECK_EQ_INT(got.server_bits, 9);
}

static void test_syntax(void) {
  /* Whitespace, case and quoted values. */
  CHECK_EQ_INT(
      offer("  Permessage-Deflate ;Server_Max_Window_Bits = \"11\"  ", 15), 1);
  CHECK_EQ_INT(got.server_bits, 11);
  CHECK_EQ_INT(offer("permessage-deflate;client_max_window_bits=\"10\"", 15),
               1);
  /* Empty list elements mean nothing. */
  CHECK_EQ_INT(offer(", ,permessage-deflate", 15), 1);
  /* Malformed: nothing after ';', a stray character, an open quote, an
   * empty quoted value, a quoted value that is not a token. */
  const char *bad[] = {"permessage-deflate;",
                       "permessage-deflate; x=",
                       "permessage-deflate @",
                       "permessage-deflate; server_max_window_bits=\"10",
                       "permessage-deflate; server_max_window_bits=\"\"",
                       "permessage-deflate; client_max_window_bits=\"1 0\"",
                       "=permessage-deflate"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (!CHECK(offer(bad[i], 15) == 0))
      fprintf(stderr, "  accepted: %s\n", bad[i]);
    CHECK_EQ_INT(declined, 1);
    CHECK_STR(why, "malformed header");
  }
  CHECK_EQ_INT(offer("", 15), 0);
  CHECK_EQ_INT(declined, 0);
}

static void test_declines(void) {
  static const struct {
    const char *offer, *why;
  } cases[] = {
      {"permessage-deflate; x-custom", "unknown parameter"},
      {"permessage-deflate; client_no_context_takeover; "
       "client_no_context_takeover",
       "repeated parameter"},
      {"permessage-deflate; server_max_window_bits=10; "
       "server_max_window_bits=10",
       "repeated parameter"},
      {"permessage-deflate; client_max_window_bits; client_max_window_bits=9",
       "repeated parameter"},
      {"permessage-deflate; server_no_context_takeover=1", "unexpected value"},
      {"permessage-deflate; server_max_window_bits",
       "server_max_window_bits needs a value"},
      {"permessage-deflate; server_max_window_bits=16",
       "window bits out of range"},
      {"permessage-deflate; server_max_window_bits=7",
       "window bits out of range"},
      {"permessage-deflate; server_max_window_bits=010",
       "window bits out of range"},
      {"permessage-deflate; client_max_window_bits=16",
       "window bits out of range"},
      {"permessage-deflate; client_max_window_bits=100000000000000000000",
       "window bits out of range"},
      {"permessage-deflate; server_max_window_bits=8",
       "server_max_window_bits=8 cannot be honoured"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!CHECK(offer(cases[i].offer, 15) == 0))
      fprintf(stderr, "  accepted: %s\n", cases[i].offer);
    CHECK_EQ_INT(declined, 1);
    CHECK_STR(why, cases[i].why);
  }
}

static void test_several_offers(void) {
  /* The first offer that can be honoured wins; the ones before it that
   * cannot are counted; other extensions are skipped, not counted. */
  CHECK_EQ_INT(offer("x-webkit-deflate-frame, "
                     "permessage-deflate; server_max_window_bits=8, "
                     "permessage-deflate; server_max_window_bits=10, "
                     "permessage-deflate",
                     15),
               1);
  CHECK_EQ_INT(got.server_bits, 10);
  CHECK_EQ_INT(declined, 1);
  /* Another extension's parameters (a long quoted value with a comma-free
   * token) do not disturb the next offer. */
  CHECK_EQ_INT(offer("foo; bar=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; "
                     "baz, permessage-deflate; client_max_window_bits=9",
                     15),
               1);
  CHECK_EQ_INT(declined, 0);
  /* Only other extensions: nothing accepted, nothing declined. */
  CHECK_EQ_INT(offer("foo, bar; baz=1", 15), 0);
  CHECK_EQ_INT(declined, 0);
  /* Two offers that cannot be honoured. */
  CHECK_EQ_INT(offer("permessage-deflate; a, permessage-deflate; b", 15), 0);
  CHECK_EQ_INT(declined, 2);
}

static void test_response(void) {
  char buf[256];
  mr_pmd_agreement a = {15, 0};
  int n = mr_pmd_response(&a, buf, sizeof buf);
  const char *want = "Sec-WebSocket-Extensions: permessage-deflate; "
                     "server_no_context_takeover; "
                     "client_no_context_takeover\r\n";
  CHECK_EQ_INT(n, strlen(want));
  CHECK_STR(buf, want);
  a = (mr_pmd_agreement){11, 1};
  n = mr_pmd_response(&a, buf, sizeof buf);
  CHECK_STR(buf, "Sec-WebSocket-Extensions: permessage-deflate; "
                 "server_no_context_takeover; client_no_context_takeover; "
                 "server_max_window_bits=11\r\n");
  CHECK_EQ_INT(mr_pmd_response(&a, buf, (size_t)n), -1);
  CHECK_EQ_INT(mr_pmd_response(&a, buf, (size_t)n + 1), n);
}

/* Any bytes: never read past the end, accept only with a sane window. */
static void test_random_bytes(void) {
  static const char alphabet[] = "permessage-deflate;,= \t\"\\_bitswxyz0189";
  char s[64];
  for (int round = 0; round < 200000; round++) {
    size_t len = test_rng() % sizeof s;
    for (size_t i = 0; i < len; i++)
      s[i] = test_rng() % 4 == 0 ? (char)test_rng()
                                 : alphabet[test_rng() % (sizeof alphabet - 1)];
    unsigned d = 0;
    mr_pmd_agreement a;
    char *copy = (char *)dup_exact((const uint8_t *)s, len);
    if (mr_pmd_negotiate(copy, len, 15, &a, &d, NULL) == 1)
      CHECK(a.server_bits >= 9 && a.server_bits <= 15);
    free(copy);
  }
}

int main(void) {
  test_clients_default_offers();
  test_syntax();
  test_declines();
  test_several_offers();
  test_response();
  test_random_bytes();
  return test_report();
}

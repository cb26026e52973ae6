/* Unit tests for the per-address connection counts (core/ipcount.c): IPv4
 * per address, IPv6 per /64, IPv4-mapped IPv6 as IPv4, the limit, release
 * to an empty table. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "error.h"
#include "ipcount.h"
#include "test_util.h"

static mr_ipkey key_of(const char *text) {
  mr_ipkey k;
  memset(&k, 0xAA, sizeof k);
  CHECK_EQ_INT(mr_ipkey_from_text(text, &k), 0);
  return k;
}

static int same(const char *a, const char *b) {
  mr_ipkey ka = key_of(a), kb = key_of(b);
  return memcmp(&ka, &kb, sizeof ka) == 0;
}

static void check_format(const char *text, const char *want) {
  mr_ipkey k = key_of(text);
  char out[64];
  mr_ipkey_format(&k, out, sizeof out);
  if (!CHECK(strcmp(out, want) == 0))
    fprintf(stderr, "  %s: got \"%s\", expected \"%s\"\n", text, out, want);
}

static void test_keys(void) {
  CHECK(same("203.0.113.7", "203.0.113.7"));
  CHECK(!same("203.0.113.7", "203.0.113.8"));
  /* A /64 is one client. */
  CHECK(same("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"));
  CHECK(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
  /* A mapped address is the IPv4 address. */
  CHECK(same("::ffff:10.0.0.1", "10.0.0.1"));
  CHECK(!same("::ffff:10.0.0.1", "::ffff:10.0.0.2"));
  /* IPv4 bytes never meet an IPv6 prefix with the same first bytes. */
  CHECK(!same("10.0.0.1", "a00:1::"));
  mr_ipkey k;
  CHECK_EQ_INT(mr_ipkey_from_text("example.com", &k), MR_EINVAL);
  CHECK_EQ_INT(mr_ipkey_from_text("", &k), MR_EINVAL);
  check_format("203.0.113.7", "203.0.113.7");
  check_format("::ffff:10.0.0.1", "10.0.0.1");
  check_format("2001:db8:0:1:2:3:4:5", "2001:db8:0:1::/64");
  check_format("::1", "::/64");
}

static void test_sockaddr(void) {
  struct sockaddr_in a4;
  struct sockaddr_in6 a6;
  mr_ipkey k;
  memset(&a4, 0, sizeof a4);
  a4.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.1", &a4.sin_addr);
  CHECK_EQ_INT(mr_ipkey_from_sockaddr((struct sockaddr *)&a4, &k), 0);
  mr_ipkey want = key_of("192.0.2.1");
  CHECK_MEM(&k, &want, sizeof k);
  memset(&a6, 0, sizeof a6);
  a6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:192.0.2.1", &a6.sin6_addr);
  CHECK_EQ_INT(mr_ipkey_from_sockaddr((struct sockaddr *)&a6, &k), 0);
  CHECK_MEM(&k, &want, sizeof k);
  inet_pton(AF_INET6, "2001:db8::99", &a6.sin6_addr);
  CHECK_EQ_INT(mr_ipkey_from_sockaddr((struct sockaddr *)&a6, &k), 0);
  want = key_of("2001:db8::1");
  CHECK_MEM(&k, &want, sizeof k);
  struct sockaddr other = {.sa_family = AF_UNIX};
  CHECK_EQ_INT(mr_ipkey_from_sockaddr(&other, &k), MR_EINVAL);
}

static void test_limit_and_release(void) {
  mr_ipcount *table = NULL;
  mr_ipcount *e[4], *x = (mr_ipcount *)1;
  mr_ipkey a = key_of("198.51.100.1"), b = key_of("2001:db8:5::1"),
           b2 = key_of("2001:db8:5::2");
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(mr_ipcount_acquire(&table, &a, 3, &e[i]), 0);
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &a, 3, &x), MR_ETOOBIG);
  CHECK(x == NULL);
  CHECK_EQ_INT(e[0]->count, 3);
  /* Another address has its own count; a /64's hosts share one. */
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &b, 2, &e[3]), 0);
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &b2, 2, &x), 0);
  CHECK(x == e[3]);
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &b2, 2, &x), MR_ETOOBIG);
  CHECK_EQ_INT(mr_ipcount_size(&table), 2);
  /* Released below the limit, the address may connect again. */
  mr_ipcount_release(&table, e[1]);
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &a, 3, &e[1]), 0);
  /* Limit 0 counts without limiting. */
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &a, 0, &x), 0);
  mr_ipcount_release(&table, x);
  for (int i = 0; i < 3; i++)
    mr_ipcount_release(&table, e[i]);
  CHECK_EQ_INT(mr_ipcount_size(&table), 1);
  mr_ipcount_release(&table, e[3]);
  mr_ipcount_release(&table, e[3]);
  CHECK_EQ_INT(mr_ipcount_size(&table), 0);
  CHECK(table == NULL);
}

/* Thousands of addresses come and go in mixed order: the table ends empty
 * (and ASan sees every entry freed). */
static void test_churn(void) {
  enum { N = 5000 };
  static mr_ipcount *held[N];
  mr_ipcount *table = NULL;
  char text[64];
  for (int i = 0; i < N; i++) {
    if (i % 2)
      snprintf(text, sizeof text, "10.%d.%d.1", i / 256 % 256, i % 256 % 16);
    else
      snprintf(text, sizeof text, "2001:db8:%x::%x", i % 97, i);
    mr_ipkey k = key_of(text);
    CHECK_EQ_INT(mr_ipcount_acquire(&table, &k, 0, &held[i]), 0);
  }
  CHECK(mr_ipcount_size(&table) > 100);
  for (int i = 0; i < N; i += 3)
    mr_ipcount_release(&table, held[i]);
  for (int i = N - 1; i >= 0; i--)
    if (i % 3)
      mr_ipcount_release(&table, held[i]);
  CHECK_EQ_INT(mr_ipcount_size(&table), 0);
  CHECK(table == NULL);
  mr_ipkey k = key_of("10.0.0.1");
  CHECK_EQ_INT(mr_ipcount_acquire(&table, &k, 0, &held[0]), 0);
  mr_ipcount_clear(&table);
  CHECK(table == NULL);
}

int main(void) {
  test_keys();
  test_sockaddr();
  test_limit_and_release();
  test_churn();
  return test_report();
}

/* Unit tests for --allow-origin matching (core/origin.c): case, default
 * ports, "*", malformed lists and origins. */
#include <string.h>

#include "origin.h"
#include "test_util.h"

static int allowed(const char *list, const char *origin) {
  /* The header value is not NUL-terminated: copy it to an exact block. */
  size_t len = strlen(origin);
  char *copy = (char *)dup_exact((const uint8_t *)origin, len);
  int r = mr_origin_allowed(list, copy, len);
  free(copy);
  return r;
}

static void test_match(void) {
  const char *list = "https://example.com, http://localhost:8080";
  CHECK(mr_origin_list_valid(list));
  CHECK(allowed(list, "https://example.com"));
  CHECK(allowed(list, "HTTPS://Example.COM"));
  CHECK(allowed(list, "https://example.com:443"));
  CHECK(allowed(list, "http://localhost:8080"));
  CHECK(!allowed(list, "http://example.com"));
  CHECK(!allowed(list, "https://example.com:8443"));
  CHECK(!allowed(list, "https://evil.example.com"));
  CHECK(!allowed(list, "https://example.com.evil.net"));
  CHECK(!allowed(list, "http://localhost"));
  CHECK(!allowed(list, "http://localhost:80800"));
  CHECK(!allowed(list, "https://example.com/"));
  CHECK(!allowed(list, "null"));
  CHECK(!allowed(list, ""));
  CHECK(!allowed(list, "https://example.co"));
}

static void test_default_ports(void) {
  CHECK(allowed("http://a.test:80", "http://a.test"));
  CHECK(allowed("http://a.test", "http://a.test:80"));
  CHECK(allowed("wss://a.test", "wss://a.test:443"));
  CHECK(!allowed("http://a.test", "http://a.test:443"));
  /* An unknown scheme has no default: only an equal port matches. */
  CHECK(allowed("app://a.test", "APP://A.test"));
  CHECK(!allowed("app://a.test", "app://a.test:80"));
  CHECK(allowed("http://[::1]:8080", "http://[::1]:8080"));
  CHECK(!allowed("http://[::1]:8080", "http://[::2]:8080"));
}

static void test_any(void) {
  CHECK(mr_origin_list_valid("*"));
  CHECK(allowed("*", "null"));
  CHECK(allowed("*", "https://x.test"));
  CHECK(allowed("https://a.test,*", "https://b.test"));
  CHECK(allowed("", "https://b.test")); /* no list: any */
}

static void test_invalid_lists(void) {
  const char *bad[] = {"",
                       " ",
                       "example.com",
                       "https://",
                       "https://a.test/",
                       "https://a.test/path",
                       "https://a.test:",
                       "https://a.test:99999",
                       "https://a.test:1x",
                       "https://a.test,,https://b.test",
                       "https://a.test,",
                       ",https://a.test",
                       "https://user@a.test",
                       "1http://a.test",
                       "http://[::1",
                       "null"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (!CHECK(!mr_origin_list_valid(bad[i])))
      fprintf(stderr, "  list \"%s\"\n", bad[i]);
  CHECK(mr_origin_list_valid("https://a.test,http://b.test:8080"));
  CHECK(mr_origin_list_valid(" https://a.test , http://b.test "));
}

int main(void) {
  test_match();
  test_default_ports();
  test_any();
  test_invalid_lists();
  return test_report();
}

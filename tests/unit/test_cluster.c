/* Unit tests for the cluster's membership logic (core/cluster.c).
 *
 * Each test builds socket-less servers with the harness in
 * tests/unit/virtual_server.h and starts a cluster on each. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "virtual_server.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define HAVE_ASAN 1
#endif

/* ---- nodes -------------------------------------------------------------- */

/* Takes a free port on 127.0.0.1 and keeps it: a listening socket. Returns
 * the socket (its port in *port), or -1. */
static int take_port(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(fd, 1) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

static int no_delivery(void *ud, const char *room, size_t room_len,
                       const void *msg, size_t len, int binary) {
  (void)ud, (void)room, (void)room_len, (void)msg, (void)len, (void)binary;
  return 0;
}

/* Counts the handles the loop still holds whose memory was already freed.
 * libuv is not built with ASan, so ASan cannot see libuv touch a freed
 * handle; the test asks ASan directly instead. Always 0 without ASan. */
static void on_walk_count_freed(uv_handle_t *h, void *arg) {
#ifdef HAVE_ASAN
  if (__asan_region_is_poisoned(h, sizeof *h))
    ++*(int *)arg;
#else
  (void)h, (void)arg;
#endif
}

static int freed_handles(uv_loop_t *loop) {
  int n = 0;
  uv_walk(loop, on_walk_count_freed, &n);
  return n;
}

/* ---- starting ----------------------------------------------------------- */

/* A cluster port that is taken fails the start, and the half-built cluster
 * is freed in its listener's close callback: the loop then ends with
 * nothing left, and ASan sees no use after free. */
static void test_start_on_a_taken_port(void) {
  int port;
  int fd = take_port(&port);
  if (!CHECK(fd >= 0))
    return;
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  const char *opts[] = {"--cluster-listen", addr, "--cookie", "secret", NULL};
  harness h;
  if (!CHECK(h_init(&h, fixture("echo_observed.lua"), opts) == 0)) {
    close(fd);
    return;
  }
  int r = mr_cluster_start(h.srv, no_delivery, NULL);
  CHECK(r < 0);
  CHECK(h.srv->cluster == NULL);
  CHECK_EQ_INT(freed_handles(&h.loop), 0);
  CHECK_EQ_INT(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
  close(fd);
  mr_server_free(h.srv);
  free(h.srv);
  CHECK_EQ_INT(uv_loop_close(&h.loop), 0);
}

int main(void) {
  mr_log_set_level(MR_LOG_ERROR);
  test_start_on_a_taken_port();
  return test_report();
}

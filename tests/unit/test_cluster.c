/* Unit tests for the cluster's membership logic (core/cluster.c): the
 * handshake, refusals, interest, forwarding, the heartbeat and the queue
 * limit, between whole nodes.
 *
 * Each node is a socket-less server (tests/unit/virtual_server.h) with a
 * cluster started on it. Nodes are joined by virtual links
 * (mr_cluster_link_virtual), one end in each node, and a small "network"
 * here moves the bytes each end queued into the other end with
 * mr_link_feed. Time is whatever the test passes to mr_cluster_tick. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "link.h"
#include "log_capture.h"
#include "virtual_server.h"
#include "wire.h"

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

/* ---- nodes and the network between them ---------------------------------- */

/* A server with a cluster, and what its cluster delivered. */
typedef struct {
  harness h;
  mr_cluster *cl;
  int deliveries;
  char room[32], msg[64];
  int binary;
  mr_member member; /* joins this node's rooms, as a connection would */
} node;

static int record_delivery(void *ud, const char *room, size_t room_len,
                           const void *msg, size_t len, int binary) {
  node *n = ud;
  n->deliveries++;
  snprintf(n->room, sizeof n->room, "%.*s", (int)room_len, room);
  snprintf(n->msg, sizeof n->msg, "%.*s", (int)len, (const char *)msg);
  n->binary = binary;
  return 1;
}

/* Starts node name with cookie. The test owns the node (node_stop). */
static node *node_start(const char *name, const char *cookie) {
  node *n = calloc(1, sizeof *n);
  const char *opts[] = {"--node", name, "--cookie", cookie, NULL};
  if (!n || h_init(&n->h, fixture("echo_observed.lua"), opts) != 0 ||
      mr_cluster_start(n->h.srv, record_delivery, n) != 0)
    abort();
  n->cl = n->h.srv->cluster;
  return n;
}

static mr_stats *stats(node *n) { return &n->h.srv->stats; }

static uint64_t now_of(node *n) { return uv_now(&n->h.loop); }

/* A local member joins (or leaves) room on n, which is what makes the
 * cluster announce interest. */
static void join(node *n, const char *room) {
  CHECK_EQ_INT(mr_rooms_join(&n->h.srv->rooms, &n->member, room, strlen(room)),
               1);
}

static void leave(node *n, const char *room) {
  CHECK_EQ_INT(mr_rooms_leave(&n->h.srv->rooms, &n->member, room, strlen(room)),
               1);
}

/* How many nodes n is linked to, and the name of the first. */
static size_t peers(node *n, const char **first) {
  const char *names[8];
  size_t count = mr_cluster_peers(n->cl, names, 8);
  if (first)
    *first = count ? names[0] : "";
  return count;
}

/* Closes the cluster, lets the loop run the close callbacks and frees the
 * node; the loop must then be empty. */
static void node_stop(node *n) {
  mr_rooms_leave_all(&n->h.srv->rooms, &n->member);
  mr_cluster_close(n->cl);
  CHECK_EQ_INT(uv_run(&n->h.loop, UV_RUN_DEFAULT), 0);
  mr_server_free(n->h.srv);
  free(n->h.srv);
  CHECK_EQ_INT(uv_loop_close(&n->h.loop), 0);
  free(n);
}

/* A virtual connection between two nodes: the dialer's end and the
 * acceptor's end. */
typedef struct {
  mr_link *d, *a;
} wire_t;

static wire_t net[8];
static int nnet;

/* Connects dialer to acceptor (the dialer's HELLO is queued at once);
 * nothing moves until net_pump. */
static wire_t *net_connect(node *dialer, node *acceptor) {
  wire_t *w = &net[nnet++];
  w->d = mr_cluster_link_virtual(dialer->cl, 1);
  w->a = mr_cluster_link_virtual(acceptor->cl, 0);
  CHECK(w->d && w->a);
  return w;
}

/* Takes everything l queued; the caller frees *out. */
static size_t take_all(mr_link *l, uint8_t **out) {
  size_t n = l->tx.outq.bytes;
  *out = malloc(n ? n : 1);
  return mr_link_take(l, *out, n);
}

/* Moves bytes until nothing is queued anywhere. Each round takes what every
 * end queued before feeding any, as a network carries what both sides sent
 * at once; a closed end sends nothing (its queue is dropped) and ignores
 * what it is fed. */
static void net_pump(void) {
  for (int round = 0; round < 100; round++) {
    uint8_t *to_a[8], *to_d[8];
    size_t na[8], nd[8], moved = 0;
    for (int i = 0; i < nnet; i++) {
      moved += na[i] = take_all(net[i].d, &to_a[i]);
      moved += nd[i] = take_all(net[i].a, &to_d[i]);
    }
    for (int i = 0; i < nnet; i++) {
      mr_link_feed(net[i].a, to_a[i], na[i]);
      mr_link_feed(net[i].d, to_d[i], nd[i]);
      free(to_a[i]);
      free(to_d[i]);
    }
    if (moved == 0)
      return;
  }
  CHECK(!"the network never went quiet");
}

/* Releases every link end (closing the open ones). */
static void net_cut(void) {
  for (int i = 0; i < nnet; i++) {
    mr_link_release(net[i].d);
    mr_link_release(net[i].a);
  }
  nnet = 0;
}

/* Moves what from queued to to, and returns the tags of the frames it
 * carried (up to max) and how many there were. */
static int step(mr_link *from, mr_link *to, uint8_t *tags, int max) {
  uint8_t *bytes;
  size_t n = take_all(from, &bytes), off = 0;
  int count = 0;
  const uint8_t *payload;
  size_t plen, used;
  while (mr_wire_next_frame(bytes + off, n - off, 1 << 24, &payload, &plen,
                            &used) == 0) {
    if (count < max)
      tags[count] = payload[0];
    count++;
    off += used;
  }
  CHECK_EQ_INT(off, n);
  mr_link_feed(to, bytes, n);
  free(bytes);
  return count;
}

#define EXPECT_STEP(from, to, ...)                                             \
  do {                                                                         \
    static const uint8_t want_[] = {__VA_ARGS__};                              \
    uint8_t got_[8];                                                           \
    int n_ = step((from), (to), got_, 8);                                      \
    if (!CHECK(n_ == (int)sizeof want_ && memcmp(got_, want_, n_) == 0))       \
      fprintf(stderr, "  (%d frames, first 0x%02x)\n", n_, n_ ? got_[0] : 0);  \
  } while (0)

/* ---- the handshake ------------------------------------------------------- */

/* HELLO, then HELLO and CHALLENGE back, then AUTH: the dialer is up once it
 * has checked the acceptor's proof and sent its own, the acceptor once it
 * has checked the dialer's. Both then send their peers and rooms, and
 * their counts and presence in full (one COUNTS and one PRESENCE frame). */
static void test_handshake(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *w = net_connect(a, b);
  EXPECT_STEP(w->d, w->a, MR_WIRE_HELLO);
  EXPECT_STEP(w->a, w->d, MR_WIRE_HELLO, MR_WIRE_CHALLENGE);
  CHECK_EQ_INT(w->d->state, MR_LINK_UP);
  CHECK_EQ_INT(w->a->state, MR_LINK_HANDSHAKE);
  EXPECT_STEP(w->d, w->a, MR_WIRE_AUTH, MR_WIRE_PEERS, MR_WIRE_INTEREST_ALL,
              MR_WIRE_COUNTS, MR_WIRE_PRESENCE);
  CHECK_EQ_INT(w->a->state, MR_LINK_UP);
  EXPECT_STEP(w->a, w->d, MR_WIRE_PEERS, MR_WIRE_INTEREST_ALL, MR_WIRE_COUNTS,
              MR_WIRE_PRESENCE);
  CHECK_EQ_INT(w->d->tx.outq.bytes + w->a->tx.outq.bytes, 0);
  CHECK_STR(w->d->name, "b");
  CHECK_STR(w->a->name, "a");
  const char *first;
  CHECK_EQ_INT(peers(a, &first), 1);
  CHECK_STR(first, "b");
  CHECK_EQ_INT(peers(b, &first), 1);
  CHECK_STR(first, "a");
  CHECK_EQ_INT(stats(a)->cluster_links_up, 1);
  CHECK_EQ_INT(stats(b)->cluster_links_up, 1);

  /* The other way round: b dials a third node, so b has been both. */
  node *c = node_start("c", "secret");
  net_connect(b, c);
  net_pump();
  CHECK_EQ_INT(peers(b, NULL), 2);
  CHECK_EQ_INT(peers(c, &first), 1);
  CHECK_STR(first, "b");
  for (node *n = a; n; n = n == a ? b : n == b ? c : NULL) {
    CHECK_EQ_INT(stats(n)->cluster_links_refused, 0);
    CHECK_EQ_INT(stats(n)->cluster_frames_malformed, 0);
  }
  net_cut();
  node_stop(a);
  node_stop(b);
  node_stop(c);
}

/* A node with another cookie is refused: the dialer refuses the acceptor's
 * proof (and never proves anything itself); the acceptor, left waiting,
 * refuses at its handshake deadline. */
static void test_wrong_cookie(void) {
  node *a = node_start("a", "secret"), *x = node_start("x", "other");
  wire_t *w = net_connect(a, x);
  net_pump();
  CHECK_EQ_INT(w->d->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(stats(a)->cluster_links_refused, 1);
  CHECK_EQ_INT(stats(a)->cluster_links_up, 0);
  CHECK_EQ_INT(w->a->state, MR_LINK_HANDSHAKE);
  mr_cluster_tick(x->cl, now_of(x) + MR_LINK_HANDSHAKE_MS);
  CHECK_EQ_INT(w->a->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(stats(x)->cluster_links_refused, 1);
  CHECK_EQ_INT(stats(x)->cluster_links_up, 0);
  CHECK_EQ_INT(peers(a, NULL) + peers(x, NULL), 0);
  net_cut();
  node_stop(a);
  node_stop(x);
}

/* Plays a dialer by hand against an acceptor end: HELLO as "evil", then an
 * AUTH proved with cookie. Returns the acceptor's state afterwards. */
static int forged_dialer(mr_link *acceptor, const char *cookie) {
  static const uint8_t nonce_d[32] = {7, 7, 7};
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_wire_encode_hello(&w, "evil", 4, "-", 1, nonce_d);
  mr_link_feed(acceptor, w.data, w.len);
  mr_wire_buf_reset(&w);
  /* The acceptor answered HELLO (with its nonce) and CHALLENGE. */
  uint8_t *out;
  size_t n = take_all(acceptor, &out);
  const uint8_t *payload;
  size_t plen, used;
  mr_wire_msg m;
  uint8_t mac[32] = {0};
  if (CHECK(mr_wire_next_frame(out, n, 1 << 20, &payload, &plen, &used) == 0 &&
            mr_wire_decode(payload, plen, &m) == 0 && m.tag == MR_WIRE_HELLO))
    CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_DIALER,
                                  nonce_d, m.hello.nonce, "evil", "b", mac),
                 0);
  free(out);
  mr_wire_encode_auth(&w, mac);
  mr_link_feed(acceptor, w.data, w.len);
  mr_wire_buf_free(&w);
  return acceptor->state;
}

/* The acceptor checks the dialer's proof: a wrong one is refused and
 * counted, a right one (made as wire.h describes) is accepted. */
static void test_acceptor_checks_the_proof(void) {
  node *b = node_start("b", "secret");
  mr_link *l = mr_cluster_link_virtual(b->cl, 0);
  CHECK_EQ_INT(forged_dialer(l, "wrong"), MR_LINK_CLOSED);
  CHECK_EQ_INT(stats(b)->cluster_links_refused, 1);
  mr_link_release(l);
  l = mr_cluster_link_virtual(b->cl, 0);
  CHECK_EQ_INT(forged_dialer(l, "secret"), MR_LINK_UP);
  CHECK_EQ_INT(stats(b)->cluster_links_up, 1);
  CHECK_EQ_INT(stats(b)->cluster_links_refused, 1);
  mr_link_release(l);
  node_stop(b);
}

/* How many warning lines of text name a wrong cookie. */
static int cookie_warnings(const char *text) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, "wrong cookie")); p++) {
    const char *bol = p;
    while (bol > text && bol[-1] != '\n')
      bol--;
    const char *warn = strstr(bol, " warn ");
    if (warn && warn < p)
      n++;
  }
  return n;
}

/* The acceptor logs a node refused for its cookie once, in words naming the
 * cookie and what to check, and only counts it after that; once the node
 * links up it is forgotten, so a later change of cookie is logged again. */
static void test_wrong_cookie_is_logged_once(void) {
  node *b = node_start("b", "secret");
  CHECK_EQ_INT(capture_begin(), 0);
  for (int i = 0; i < 3; i++) {
    mr_link *l = mr_cluster_link_virtual(b->cl, 0);
    CHECK_EQ_INT(forged_dialer(l, "wrong"), MR_LINK_CLOSED);
    mr_link_release(l);
  }
  const char *text = capture_end();
  CHECK_EQ_INT(cookie_warnings(text), 1);
  CHECK(strstr(text, "wrong cookie (node evil") != NULL);
  CHECK(strstr(text, "MOONROOM_COOKIE") != NULL);
  CHECK_EQ_INT(stats(b)->cluster_links_refused, 3);
  mr_link *up = mr_cluster_link_virtual(b->cl, 0);
  CHECK_EQ_INT(forged_dialer(up, "secret"), MR_LINK_UP);
  mr_link_release(up);
  CHECK_EQ_INT(capture_begin(), 0);
  mr_link *l = mr_cluster_link_virtual(b->cl, 0);
  CHECK_EQ_INT(forged_dialer(l, "wrong"), MR_LINK_CLOSED);
  mr_link_release(l);
  CHECK_EQ_INT(cookie_warnings(capture_end()), 1);
  CHECK_EQ_INT(stats(b)->cluster_links_refused, 4);
  node_stop(b);
}

static void feed_frame(mr_link *l, const uint8_t *payload, size_t len) {
  uint8_t buf[64] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),
                     (uint8_t)(len >> 8), (uint8_t)len};
  memcpy(buf + 4, payload, len);
  mr_link_feed(l, buf, 4 + len);
}

/* Feeds payloads to a fresh acceptor end of b, one frame each, and checks
 * the last one refused the peer as malformed. */
static void expect_refused(node *b, const uint8_t *const *frames,
                           const size_t *lens, int n, int line) {
  uint64_t refused = stats(b)->cluster_links_refused;
  uint64_t malformed = stats(b)->cluster_frames_malformed;
  mr_link *l = mr_cluster_link_virtual(b->cl, 0);
  for (int i = 0; i < n; i++) {
    if (!CHECK(l->state == MR_LINK_HANDSHAKE))
      fprintf(stderr, "  (line %d: closed before frame %d)\n", line, i);
    feed_frame(l, frames[i], lens[i]);
  }
  if (!CHECK(l->state == MR_LINK_CLOSED))
    fprintf(stderr, "  (line %d)\n", line);
  CHECK_EQ_INT(stats(b)->cluster_links_refused, refused + 1);
  CHECK_EQ_INT(stats(b)->cluster_frames_malformed, malformed + 1);
  mr_link_release(l);
}

/* During the handshake a malformed frame, or any frame but the next step,
 * refuses the peer and counts a malformed frame. */
static void test_handshake_refusals(void) {
  node *b = node_start("b", "secret");
  uint8_t hello[64], hello_v2[64];
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_wire_encode_hello(&w, "evil", 4, "-", 1, (const uint8_t[32]){0});
  size_t hlen = w.len - 4;
  memcpy(hello, w.data + 4, hlen);
  memcpy(hello_v2, hello, hlen);
  hello_v2[1] = 2; /* the version */
  mr_wire_buf_free(&w);
  static const uint8_t ping[] = {MR_WIRE_PING, 0, 0, 0, 0, 0, 0, 0, 1};
  static const uint8_t challenge[33] = {MR_WIRE_CHALLENGE};
  static const uint8_t auth[33] = {MR_WIRE_AUTH};
  static const uint8_t unknown[] = {0x7f};
  static const uint8_t empty[] = {0};

  const uint8_t *f1[] = {hello_v2};
  expect_refused(b, f1, (size_t[]){hlen}, 1, __LINE__);
  const uint8_t *f2[] = {ping};
  expect_refused(b, f2, (size_t[]){sizeof ping}, 1, __LINE__);
  const uint8_t *f3[] = {auth}; /* AUTH before HELLO */
  expect_refused(b, f3, (size_t[]){sizeof auth}, 1, __LINE__);
  const uint8_t *f4[] = {hello, challenge}; /* an acceptor expects AUTH */
  expect_refused(b, f4, (size_t[]){hlen, sizeof challenge}, 2, __LINE__);
  const uint8_t *f5[] = {hello, hello};
  expect_refused(b, f5, (size_t[]){hlen, hlen}, 2, __LINE__);
  const uint8_t *f6[] = {unknown};
  expect_refused(b, f6, (size_t[]){sizeof unknown}, 1, __LINE__);
  const uint8_t *f7[] = {empty, empty}; /* a zero length prefix */
  expect_refused(b, f7, (size_t[]){0, 0}, 1, __LINE__);
  CHECK_EQ_INT(stats(b)->cluster_links_up, 0);
  node_stop(b);
}

/* ---- established links --------------------------------------------------- */

/* Once up, a frame with a tag this node does not know is skipped and
 * counted, and the link carries on; a handshake frame is not tolerated. */
static void test_unknown_tag_on_an_established_link(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *w = net_connect(a, b);
  net_pump();
  static const uint8_t unknown[] = {0x7f, 1, 2, 3};
  feed_frame(w->a, unknown, sizeof unknown);
  CHECK_EQ_INT(stats(b)->cluster_unknown_tags, 1);
  CHECK_EQ_INT(stats(b)->cluster_frames_malformed, 0);
  CHECK_EQ_INT(w->a->state, MR_LINK_UP);
  join(a, "r");
  net_pump();
  mr_cluster_forward(b->cl, "r", 1, "still here", 10, 0);
  net_pump();
  CHECK_EQ_INT(a->deliveries, 1);
  CHECK_STR(a->msg, "still here");

  static const uint8_t auth[33] = {MR_WIRE_AUTH};
  feed_frame(w->a, auth, sizeof auth);
  CHECK_EQ_INT(w->a->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(stats(b)->cluster_frames_malformed, 1);
  CHECK_EQ_INT(stats(b)->cluster_links_dropped, 1);
  CHECK_EQ_INT(stats(b)->cluster_links_refused, 0);
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* Three nodes in a mesh. A broadcast goes once to each node with members
 * in the room and to no other, whether the interest came as INTEREST or in
 * the INTEREST_ALL after the handshake; a node that receives it delivers
 * it locally once and never forwards it again. */
static void test_interest_and_forwarding(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret"),
       *c = node_start("c", "secret");
  join(b, "early"); /* before any link: announced in INTEREST_ALL */
  wire_t *ab = net_connect(a, b), *ac = net_connect(a, c),
         *bc = net_connect(b, c);
  net_pump();
  CHECK_EQ_INT(peers(a, NULL) + peers(b, NULL) + peers(c, NULL), 6);

  mr_cluster_forward(a->cl, "early", 5, "one", 3, 0);
  CHECK(ab->d->tx.outq.bytes > 0);
  CHECK_EQ_INT(ac->d->tx.outq.bytes, 0);
  net_pump();
  CHECK_EQ_INT(b->deliveries, 1);
  CHECK_STR(b->room, "early");
  CHECK_STR(b->msg, "one");
  CHECK_EQ_INT(c->deliveries, 0);

  join(b, "r"); /* announced as INTEREST */
  join(c, "r");
  net_pump();
  mr_cluster_forward(a->cl, "r", 1, "\x01\x02", 2, 1);
  CHECK_EQ_INT(stats(a)->cluster_broadcasts_out, 3);
  CHECK(ab->d->tx.outq.bytes > 0 && ac->d->tx.outq.bytes > 0);
  /* What b and c received they deliver, and send nowhere. */
  EXPECT_STEP(ab->d, ab->a, MR_WIRE_ROOM_BINARY);
  EXPECT_STEP(ac->d, ac->a, MR_WIRE_ROOM_BINARY);
  CHECK_EQ_INT(bc->d->tx.outq.bytes + bc->a->tx.outq.bytes, 0);
  CHECK_EQ_INT(ab->a->tx.outq.bytes + ac->a->tx.outq.bytes, 0);
  CHECK_EQ_INT(b->deliveries, 2);
  CHECK_EQ_INT(c->deliveries, 1);
  CHECK_STR(c->room, "r");
  CHECK_EQ_INT(c->binary, 1);
  CHECK_MEM(c->msg, "\x01\x02", 2);

  /* b's last member leaves r: only c hears of r from now on. */
  leave(b, "r");
  net_pump();
  mr_cluster_forward(a->cl, "r", 1, "two", 3, 0);
  net_pump();
  CHECK_EQ_INT(b->deliveries, 2);
  CHECK_EQ_INT(c->deliveries, 2);
  CHECK_STR(c->msg, "two");
  /* Nobody is interested in a room no node has members in. */
  mr_cluster_forward(c->cl, "nowhere", 7, "x", 1, 0);
  CHECK_EQ_INT(ac->a->tx.outq.bytes + bc->a->tx.outq.bytes, 0);
  CHECK_EQ_INT(stats(a)->cluster_broadcasts_out, 4);
  net_cut();
  node_stop(a);
  node_stop(b);
  node_stop(c);
}

/* Two nodes that dial each other at once keep one link, the one dialed by
 * the node whose name sorts first, and neither counts a failure. */
static void test_duplicate_links(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *ab = net_connect(a, b), *ba = net_connect(b, a);
  net_pump();
  CHECK_EQ_INT(ab->d->state, MR_LINK_UP);
  CHECK_EQ_INT(ab->a->state, MR_LINK_UP);
  CHECK_EQ_INT(ba->d->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(ba->a->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(peers(a, NULL) + peers(b, NULL), 2);
  for (node *n = a; n; n = n == a ? b : NULL) {
    CHECK_EQ_INT(stats(n)->cluster_links_refused, 0);
    CHECK_EQ_INT(stats(n)->cluster_links_dropped, 0);
  }
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* The race the symmetric pump above never hits: b's own link to a is up
 * before a's proof reaches b on the link b dialed, so b drops that link
 * right after its proof (the duplicate rule), perhaps before the proof
 * leaves. a then sees the peer close its handshake after a's proof, which
 * alone would read as "b has a different cookie"; with a's link to b up it
 * is the duplicate rule, and nothing is refused, counted or warned. */
static void test_duplicate_link_closed_in_the_handshake(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  CHECK_EQ_INT(capture_begin(), 0);
  wire_t *ab = net_connect(a, b), *ba = net_connect(b, a);
  EXPECT_STEP(ab->d, ab->a, MR_WIRE_HELLO);
  EXPECT_STEP(ab->a, ab->d, MR_WIRE_HELLO, MR_WIRE_CHALLENGE);
  uint8_t tags[8]; /* AUTH, then what a sends once up */
  CHECK(step(ab->d, ab->a, tags, 8) >= 1 && tags[0] == MR_WIRE_AUTH);
  CHECK_EQ_INT(ab->d->state, MR_LINK_UP);
  CHECK_EQ_INT(ab->a->state, MR_LINK_UP);
  EXPECT_STEP(ba->d, ba->a, MR_WIRE_HELLO);
  EXPECT_STEP(ba->a, ba->d, MR_WIRE_HELLO, MR_WIRE_CHALLENGE);
  CHECK_EQ_INT(ba->d->state, MR_LINK_CLOSED); /* b kept a's link */
  /* What a's end of that link sees: the stream ends, as on EOF. */
  mr_link_close(ba->a, "closed by the peer", 0);
  const char *text = capture_end();
  CHECK_EQ_INT(cookie_warnings(text), 0);
  if (!CHECK(strstr(text, "refused") == NULL))
    fprintf(stderr, "%s", text);
  for (node *n = a; n; n = n == a ? b : NULL) {
    CHECK_EQ_INT(stats(n)->cluster_links_refused, 0);
    CHECK_EQ_INT(stats(n)->cluster_links_dropped, 0);
  }
  net_pump();
  CHECK_EQ_INT(peers(a, NULL) + peers(b, NULL), 2);
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* ---- time ---------------------------------------------------------------- */

/* The heartbeat pings every established link; a link that has heard
 * nothing for MR_LINK_SILENT_MS is dropped, counted, and its node is no
 * longer a peer. */
static void test_heartbeat(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *w = net_connect(a, b);
  net_pump();
  uint64_t t0 = now_of(a);
  mr_cluster_tick(a->cl, t0 + 1000);
  EXPECT_STEP(w->d, w->a, MR_WIRE_PING);
  EXPECT_STEP(w->a, w->d, MR_WIRE_PONG);
  mr_cluster_tick(a->cl, t0 + MR_LINK_SILENT_MS - 1);
  CHECK_EQ_INT(w->d->state, MR_LINK_UP);
  mr_cluster_tick(a->cl, t0 + MR_LINK_SILENT_MS);
  CHECK_EQ_INT(w->d->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(stats(a)->cluster_links_dropped, 1);
  CHECK_EQ_INT(stats(a)->cluster_links_refused, 0);
  CHECK_EQ_INT(peers(a, NULL), 0);
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* A link that has not authenticated in time is refused. */
static void test_handshake_deadline(void) {
  node *a = node_start("a", "secret");
  mr_link *l = mr_cluster_link_virtual(a->cl, 1);
  uint64_t t0 = now_of(a);
  mr_cluster_tick(a->cl, t0 + MR_LINK_HANDSHAKE_MS - 1);
  CHECK_EQ_INT(l->state, MR_LINK_HANDSHAKE);
  mr_cluster_tick(a->cl, t0 + MR_LINK_HANDSHAKE_MS);
  CHECK_EQ_INT(l->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(stats(a)->cluster_links_refused, 1);
  mr_link_release(l);
  node_stop(a);
}

/* A peer that does not read is dropped once its link holds 64 MiB, and
 * counted, rather than grow this node's memory. */
static void test_queue_limit(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *w = net_connect(a, b);
  join(b, "r");
  net_pump();
  size_t len = 1u << 20;
  char *msg = calloc(1, len);
  int sent = 0;
  while (w->d->state == MR_LINK_UP && sent < 100) {
    mr_cluster_forward(a->cl, "r", 1, msg, len, 1);
    sent++;
  }
  free(msg);
  /* 63 frames of 1 MiB and 12 bytes fit in 64 MiB; the 64th does not. */
  CHECK_EQ_INT(sent, 64);
  CHECK_EQ_INT(stats(a)->cluster_broadcasts_out, 63);
  CHECK_EQ_INT(stats(a)->cluster_queue_drops, 1);
  CHECK_EQ_INT(stats(a)->cluster_links_dropped, 1);
  CHECK_EQ_INT(peers(a, NULL), 0);
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* ---- what cannot be sent is counted and logged -----------------------------
 */

static FILE *log_file;
static int saved_stderr = -1;

/* Sends what the server logs at warn level and above to a temporary file
 * until log_end. */
static void log_begin(void) {
  fflush(stderr);
  log_file = tmpfile();
  saved_stderr = dup(2);
  if (!log_file || saved_stderr < 0 || dup2(fileno(log_file), 2) < 0)
    abort();
  mr_log_set_level(MR_LOG_WARN);
}

/* Restores stderr and returns what was logged since log_begin. */
static const char *log_end(void) {
  static char text[8192];
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  mr_log_set_level(MR_LOG_ERROR);
  rewind(log_file);
  size_t n = fread(text, 1, sizeof text - 1, log_file);
  text[n] = '\0';
  fclose(log_file);
  return text;
}

/* A room name longer than the wire can carry (MR_WIRE_MAX_ROOM). */
static char *long_room(size_t *len) {
  *len = MR_WIRE_MAX_ROOM + 1;
  char *room = malloc(*len + 1);
  memset(room, 'L', *len);
  room[*len] = '\0';
  memcpy(room, "toolong", 7);
  return room;
}

/* A broadcast to a room the wire cannot name (too long, or not UTF-8)
 * cannot reach a peer that may have members in it: with a link up it is
 * counted as an internal error and logged with the room's name. */
static void test_unforwardable_broadcast(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  size_t len;
  char *room = long_room(&len);
  mr_cluster_forward(a->cl, room, len, "x", 1, 0); /* no link: no loss */
  CHECK_EQ_INT(stats(a)->internal_errors, 0);
  net_connect(a, b);
  net_pump();
  log_begin();
  mr_cluster_forward(a->cl, room, len, "x", 1, 0);
  const char *log = log_end();
  CHECK_EQ_INT(stats(a)->internal_errors, 1);
  CHECK(strstr(log, "warn") && strstr(log, "broadcast") &&
        strstr(log, "toolongLLL"));
  log_begin();
  mr_cluster_forward(a->cl, "\xff", 1, "x", 1, 0);
  log = log_end();
  CHECK_EQ_INT(stats(a)->internal_errors, 2);
  CHECK(strstr(log, "broadcast") && strstr(log, "\xff"));
  CHECK_EQ_INT(stats(a)->cluster_broadcasts_out, 0);
  free(room);
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* A room the wire cannot name cannot be announced: neither when it gets
 * its first member nor in the INTEREST_ALL to a new peer. Each is counted
 * and logged with the room's name, and the rest still goes out. */
static void test_unannounceable_interest(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  size_t len;
  char *room = long_room(&len);
  log_begin();
  join(b, room);
  const char *log = log_end();
  CHECK_EQ_INT(stats(b)->internal_errors, 1);
  CHECK(strstr(log, "warn") && strstr(log, "interest") &&
        strstr(log, "toolongLLL"));
  join(b, "fine");
  log_begin();
  net_connect(a, b);
  net_pump();
  log = log_end();
  /* The presence full state leaves the room's count out the same way. */
  CHECK_EQ_INT(stats(b)->internal_errors, 3);
  CHECK(strstr(log, "interest") && strstr(log, "toolongLLL"));
  CHECK(strstr(log, "presence: the count for room toolongLLL"));
  CHECK_EQ_INT(peers(a, NULL), 1);
  mr_cluster_forward(a->cl, "fine", 4, "ok", 2, 0);
  net_pump();
  CHECK_EQ_INT(b->deliveries, 1);
  CHECK_EQ_INT(stats(a)->internal_errors, 0);
  free(room);
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* ---- out of memory ---------------------------------------------------------
 *
 * With MR_TEST_WRAP_MALLOC the test is linked with -Wl,--wrap=malloc (see
 * the end of CMakeLists.txt), so every malloc of the core, the test's own
 * included, goes through __wrap_malloc, which fails the next fail_mallocs
 * calls. calloc and realloc are not wrapped. Without it these cases are
 * skipped. */
#ifdef MR_TEST_WRAP_MALLOC
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);

static int fail_mallocs;

void *__wrap_malloc(size_t size) {
  if (fail_mallocs > 0) {
    fail_mallocs--;
    return NULL;
  }
  return __real_malloc(size);
}

/* Feeds to to what from queued, with the next malloc failing. */
static void feed_failing(mr_link *from, mr_link *to) {
  uint8_t *bytes;
  size_t n = take_all(from, &bytes);
  fail_mallocs = 1;
  mr_link_feed(to, bytes, n);
  CHECK_EQ_INT(fail_mallocs, 0); /* the malloc was made, and failed */
  fail_mallocs = 0;
  free(bytes);
}

/* A peer's interest that cannot be stored is counted and logged (the node
 * then misses that room's broadcasts until it announces it again). */
static void test_interest_out_of_memory(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *w = net_connect(a, b);
  net_pump();
  join(b, "r");
  log_begin();
  feed_failing(w->a, w->d);
  const char *log = log_end();
  CHECK_EQ_INT(stats(a)->internal_errors, 1);
  CHECK(strstr(log, "warn") && strstr(log, "interest of node b") &&
        strstr(log, "room r ") && strstr(log, "out of memory"));
  mr_cluster_forward(a->cl, "r", 1, "lost", 4, 0);
  CHECK_EQ_INT(w->d->tx.outq.bytes, 0);
  leave(b, "r");
  join(b, "r");
  net_pump();
  mr_cluster_forward(a->cl, "r", 1, "found", 5, 0);
  net_pump();
  CHECK_EQ_INT(b->deliveries, 1);
  CHECK_STR(b->msg, "found");
  net_cut();
  node_stop(a);
  node_stop(b);
}

/* A broadcast, an interest and a ping whose frame cannot be allocated are
 * each counted and logged, and nothing half-built is sent. */
static void test_frames_out_of_memory(void) {
  node *a = node_start("a", "secret"), *b = node_start("b", "secret");
  wire_t *w = net_connect(a, b);
  join(b, "r");
  net_pump();
  log_begin();
  fail_mallocs = 1;
  mr_cluster_forward(a->cl, "r", 1, "lost", 4, 0);
  fail_mallocs = 1; /* as if a's room "mine" had just got its first member */
  mr_cluster_interest(a->cl, "mine", 4, 1);
  fail_mallocs = 1;
  mr_cluster_tick(a->cl, now_of(a) + 1000);
  fail_mallocs = 0;
  const char *log = log_end();
  CHECK_EQ_INT(stats(a)->internal_errors, 3);
  CHECK_EQ_INT(stats(a)->cluster_broadcasts_out, 0);
  CHECK(strstr(log, "a broadcast for room r ") &&
        strstr(log, "interest for room mine ") &&
        strstr(log, "cannot ping b: out of memory"));
  CHECK_EQ_INT(w->d->tx.outq.bytes, 0);
  CHECK_EQ_INT(w->d->state, MR_LINK_UP);
  mr_cluster_forward(a->cl, "r", 1, "sent", 4, 0);
  net_pump();
  CHECK_EQ_INT(b->deliveries, 1);
  CHECK_STR(b->msg, "sent");
  net_cut();
  node_stop(a);
  node_stop(b);
}
#endif

int main(void) {
  mr_log_set_level(MR_LOG_ERROR);
  test_start_on_a_taken_port();
  test_handshake();
  test_wrong_cookie();
  test_acceptor_checks_the_proof();
  test_wrong_cookie_is_logged_once();
  test_handshake_refusals();
  test_unknown_tag_on_an_established_link();
  test_interest_and_forwarding();
  test_duplicate_links();
  test_duplicate_link_closed_in_the_handshake();
  test_heartbeat();
  test_handshake_deadline();
  test_queue_limit();
  test_unforwardable_broadcast();
  test_unannounceable_interest();
#ifdef MR_TEST_WRAP_MALLOC
  test_interest_out_of_memory();
  test_frames_out_of_memory();
#else
  printf("skipped: the out-of-memory cases need -Wl,--wrap=malloc\n");
#endif
  return test_report();
}

/* Unit tests for the room registry (core/rooms.c).
 *
 * Besides the table-style cases, a randomized run checks the registry
 * against a plain boolean matrix after every operation, including every
 * back-pointer between the room side and the member side. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rooms.h"
#include "test_util.h"

/* ---- on_change recorder ---- */

enum { MAX_EVENTS = 64 };

typedef struct {
  const mr_rooms *rooms;
  int n;
  struct {
    char name[64];
    size_t len;
    int created;
    unsigned count; /* room->count during the call */
    int found;      /* mr_rooms_find returned this room during the call */
  } ev[MAX_EVENTS];
  /* Per-name counters for the randomized test. */
  int *creates, *deletes;
  const char *const *names;
  const size_t *lens;
  int nnames;
  int unknown; /* events for names not in the table */
} recorder;

static void on_change(void *ud, const mr_room *room, int created) {
  recorder *rec = ud;
  if (rec->n < MAX_EVENTS) {
    size_t len = room->name_len < 63 ? room->name_len : 63;
    memcpy(rec->ev[rec->n].name, room->name, len);
    rec->ev[rec->n].name[len] = '\0';
    rec->ev[rec->n].len = room->name_len;
    rec->ev[rec->n].created = created;
    rec->ev[rec->n].count = room->count;
    rec->ev[rec->n].found = rec->rooms && mr_rooms_find(rec->rooms, room->name,
                                                        room->name_len) == room;
  }
  rec->n++;
  if (rec->names) {
    for (int i = 0; i < rec->nnames; i++) {
      if (rec->lens[i] == room->name_len &&
          memcmp(rec->names[i], room->name, room->name_len) == 0) {
        (created ? rec->creates : rec->deletes)[i]++;
        return;
      }
    }
    rec->unknown++;
  }
}

static int join(mr_rooms *r, mr_member *m, const char *name) {
  return mr_rooms_join(r, m, name, strlen(name));
}

static int leave(mr_rooms *r, mr_member *m, const char *name) {
  return mr_rooms_leave(r, m, name, strlen(name));
}

static mr_room *find(mr_rooms *r, const char *name) {
  return mr_rooms_find(r, name, strlen(name));
}

/* ---- table cases ---- */

static void test_join_leave(void) {
  recorder rec = {0};
  mr_rooms r;
  mr_rooms_init(&r, on_change, &rec);
  rec.rooms = &r;
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK(find(&r, "lobby") == NULL);

  mr_member a = {0}, b = {0};
  CHECK_EQ_INT(join(&r, &a, "lobby"), 1);
  CHECK_EQ_INT(r.nrooms, 1);
  CHECK_EQ_INT(rec.n, 1);
  CHECK_STR(rec.ev[0].name, "lobby");
  CHECK_EQ_INT(rec.ev[0].created, 1);
  CHECK_EQ_INT(rec.ev[0].count, 1); /* called once the member is in */
  CHECK_EQ_INT(rec.ev[0].found, 1);

  mr_room *lobby = find(&r, "lobby");
  if (!CHECK(lobby != NULL))
    return;
  CHECK_SPAN(lobby->name, lobby->name_len, "lobby");
  CHECK_EQ_INT(lobby->name[5], '\0');
  CHECK_EQ_INT(lobby->count, 1);
  CHECK(lobby->members[0].member == &a);
  CHECK_EQ_INT(lobby->members[0].link, 0);
  CHECK_EQ_INT(a.nlinks, 1);
  CHECK(mr_member_links(&a)[0].room == lobby);
  CHECK_EQ_INT(mr_member_links(&a)[0].slot, 0);
  CHECK_EQ_INT(a.cap, 0); /* one room: the inline link, no heap array */
  CHECK_EQ_INT(mr_rooms_is_member(&a, lobby), 1);
  CHECK_EQ_INT(mr_rooms_is_member(&b, lobby), 0);

  /* Idempotent join: no event, no change. */
  CHECK_EQ_INT(join(&r, &a, "lobby"), 0);
  CHECK_EQ_INT(lobby->count, 1);
  CHECK_EQ_INT(a.nlinks, 1);
  CHECK_EQ_INT(r.nrooms, 1);
  CHECK_EQ_INT(rec.n, 1);

  /* A second member joins the existing room: no event. */
  CHECK_EQ_INT(join(&r, &b, "lobby"), 1);
  CHECK_EQ_INT(join(&r, &b, "lobby"), 0);
  CHECK(find(&r, "lobby") == lobby);
  CHECK_EQ_INT(lobby->count, 2);
  CHECK_EQ_INT(r.nrooms, 1);
  CHECK_EQ_INT(rec.n, 1);

  /* Leaving a room one is not in, or a room that does not exist. */
  CHECK_EQ_INT(leave(&r, &a, "nowhere"), 0);
  mr_member c = {0};
  CHECK_EQ_INT(leave(&r, &c, "lobby"), 0);
  CHECK_EQ_INT(lobby->count, 2);

  /* a leaves: b is swapped into slot 0 and its link fixed. */
  CHECK_EQ_INT(leave(&r, &a, "lobby"), 1);
  CHECK_EQ_INT(leave(&r, &a, "lobby"), 0);
  CHECK_EQ_INT(a.nlinks, 0);
  CHECK_EQ_INT(lobby->count, 1);
  CHECK(lobby->members[0].member == &b);
  CHECK_EQ_INT(mr_member_links(&b)[lobby->members[0].link].slot, 0);
  CHECK_EQ_INT(r.nrooms, 1);
  CHECK_EQ_INT(rec.n, 1);

  /* The last member leaves: the room is deleted, with one event. */
  CHECK_EQ_INT(leave(&r, &b, "lobby"), 1);
  CHECK(find(&r, "lobby") == NULL);
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK(r.by_name == NULL);
  CHECK_EQ_INT(rec.n, 2);
  CHECK_STR(rec.ev[1].name, "lobby");
  CHECK_EQ_INT(rec.ev[1].created, 0);
  CHECK_EQ_INT(rec.ev[1].count, 0);
  CHECK_EQ_INT(rec.ev[1].found, 1); /* still valid during the call */
  CHECK_EQ_INT(leave(&r, &b, "lobby"), 0);
  CHECK_EQ_INT(rec.n, 2);

  /* Rejoining re-creates it, with a fresh event. */
  CHECK_EQ_INT(join(&r, &b, "lobby"), 1);
  CHECK_EQ_INT(rec.n, 3);
  CHECK_EQ_INT(rec.ev[2].created, 1);
  CHECK_EQ_INT(r.nrooms, 1);

  mr_rooms_leave_all(&r, &a);
  mr_rooms_leave_all(&r, &b);
  mr_rooms_leave_all(&r, &c);
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK_EQ_INT(rec.n, 4);
  mr_rooms_free(&r);
}

static void test_no_callback(void) {
  mr_rooms r;
  mr_rooms_init(&r, NULL, NULL);
  mr_member a = {0};
  CHECK_EQ_INT(join(&r, &a, "x"), 1);
  CHECK_EQ_INT(leave(&r, &a, "x"), 1);
  CHECK_EQ_INT(r.nrooms, 0);
  mr_rooms_leave_all(&r, &a);
  mr_rooms_free(&r);
}

static void test_leave_all(void) {
  recorder rec = {0};
  mr_rooms r;
  mr_rooms_init(&r, on_change, &rec);
  rec.rooms = &r;
  mr_member a = {0}, b = {0};
  const char *names[] = {"r0", "r1", "r2", "r3", "r4", "r5"};
  for (int i = 0; i < 6; i++)
    CHECK_EQ_INT(join(&r, &a, names[i]), 1);
  CHECK_EQ_INT(a.nlinks, 6);
  CHECK(a.cap >= 6);
  /* b shares r1 and r4 only. */
  CHECK_EQ_INT(join(&r, &b, "r4"), 1);
  CHECK_EQ_INT(join(&r, &b, "r1"), 1);
  CHECK_EQ_INT(join(&r, &b, "solo"), 1);
  CHECK_EQ_INT(r.nrooms, 7);
  CHECK_EQ_INT(rec.n, 7);

  mr_rooms_leave_all(&r, &a);
  CHECK_EQ_INT(a.nlinks, 0);
  CHECK(a.links.many == NULL);
  CHECK_EQ_INT(a.cap, 0);
  CHECK_EQ_INT(r.nrooms, 3);
  CHECK_EQ_INT(rec.n, 7 + 4); /* r0, r2, r3, r5 deleted */
  int deleted[6] = {0};
  for (int e = 7; e < rec.n && e < MAX_EVENTS; e++) {
    CHECK_EQ_INT(rec.ev[e].created, 0);
    for (int i = 0; i < 6; i++)
      if (strcmp(rec.ev[e].name, names[i]) == 0)
        deleted[i]++;
  }
  CHECK(deleted[0] == 1 && deleted[1] == 0 && deleted[2] == 1 &&
        deleted[3] == 1 && deleted[4] == 0 && deleted[5] == 1);
  for (int i = 0; i < 6; i++) {
    mr_room *room = find(&r, names[i]);
    if (i == 1 || i == 4) {
      if (CHECK(room != NULL)) {
        CHECK_EQ_INT(room->count, 1);
        CHECK(room->members[0].member == &b);
        CHECK(mr_member_links(&b)[room->members[0].link].room == room);
      }
    } else {
      CHECK(room == NULL);
    }
  }
  /* b's links still point into the right slots. */
  CHECK_EQ_INT(b.nlinks, 3);
  for (uint32_t k = 0; k < b.nlinks; k++) {
    mr_room *room = mr_member_links(&b)[k].room;
    CHECK(room->members[mr_member_links(&b)[k].slot].member == &b);
    CHECK_EQ_INT(room->members[mr_member_links(&b)[k].slot].link, k);
  }
  CHECK(find(&r, "solo") != NULL);

  /* leave_all on a member in no room, twice, is harmless. */
  mr_rooms_leave_all(&r, &a);
  CHECK_EQ_INT(r.nrooms, 3);
  /* A member can join again after leave_all. */
  CHECK_EQ_INT(join(&r, &a, "r1"), 1);
  CHECK_EQ_INT(find(&r, "r1")->count, 2);
  mr_rooms_leave_all(&r, &a);
  mr_rooms_leave_all(&r, &b);
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK_EQ_INT(rec.n, 7 + 4 + 3);
  mr_rooms_free(&r);
}

/* Names are byte strings: prefixes, embedded NULs, binary and UTF-8 names
 * are all distinct rooms, and each keeps its exact bytes. */
#define NAME(s)                                                                \
  { s, sizeof s - 1 }
static const struct {
  const char *s;
  size_t len;
} odd_names[] = {
    NAME("a"),
    NAME("ab"),
    NAME("abc"),
    NAME("abcd"),
    NAME("a\0"),
    NAME("a\0b"),
    NAME("a\0c"),
    NAME("\0"),
    NAME("\0\0"),
    NAME("\xff\xfe\x00\x01"),
    NAME("\xff\xfe\x00\x02"),
    NAME("salle-\xC3\xA9t\xC3\xA9"),                  /* salle-été */
    NAME("salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99"), /* salle-été-🌙 */
    NAME("salle-\xC3\xA9"),
    NAME("Lobby"),
    NAME("lobby"),
    NAME(""),
};
#undef NAME
enum { NODD = sizeof odd_names / sizeof odd_names[0] };

static void test_names(void) {
  recorder rec = {0};
  mr_rooms r;
  mr_rooms_init(&r, on_change, &rec);
  rec.rooms = &r;
  mr_member m = {0}, n = {0};
  mr_room *rooms[NODD + 2];
  for (int i = 0; i < NODD; i++)
    CHECK_EQ_INT(mr_rooms_join(&r, &m, odd_names[i].s, odd_names[i].len), 1);
  CHECK_EQ_INT(r.nrooms, NODD);
  CHECK_EQ_INT(rec.n, NODD);
  CHECK_EQ_INT(HASH_COUNT(r.by_name), NODD);
  CHECK_EQ_INT(m.nlinks, NODD);

  /* Two long names that differ only in their last byte. */
  char long1[1000], long2[1000];
  memset(long1, 'x', sizeof long1);
  memcpy(long2, long1, sizeof long2);
  long2[999] = 'y';
  CHECK_EQ_INT(mr_rooms_join(&r, &n, long1, sizeof long1), 1);
  CHECK_EQ_INT(mr_rooms_join(&r, &n, long2, sizeof long2), 1);
  CHECK_EQ_INT(mr_rooms_join(&r, &n, long1, 999), 1); /* a prefix of both */
  CHECK_EQ_INT(r.nrooms, NODD + 3);

  for (int i = 0; i < NODD; i++) {
    rooms[i] = mr_rooms_find(&r, odd_names[i].s, odd_names[i].len);
    if (!CHECK(rooms[i] != NULL)) {
      fprintf(stderr, "  room %d not found\n", i);
      continue;
    }
    CHECK_EQ_INT(rooms[i]->name_len, odd_names[i].len);
    CHECK_MEM(rooms[i]->name, odd_names[i].s, odd_names[i].len);
    CHECK_EQ_INT(rooms[i]->name[odd_names[i].len], '\0');
    CHECK_EQ_INT(rooms[i]->count, 1);
    CHECK_EQ_INT(mr_rooms_is_member(&m, rooms[i]), 1);
    CHECK_EQ_INT(mr_rooms_is_member(&n, rooms[i]), 0);
    /* Joining again by the same bytes finds the same room. */
    CHECK_EQ_INT(mr_rooms_join(&r, &m, odd_names[i].s, odd_names[i].len), 0);
  }
  int distinct = 1;
  for (int i = 0; i < NODD; i++)
    for (int j = i + 1; j < NODD; j++)
      if (rooms[i] && rooms[i] == rooms[j])
        distinct = 0;
  CHECK(distinct);
  mr_room *l1 = mr_rooms_find(&r, long1, sizeof long1);
  mr_room *l2 = mr_rooms_find(&r, long2, sizeof long2);
  mr_room *l0 = mr_rooms_find(&r, long1, 999);
  CHECK(l1 && l2 && l0 && l1 != l2 && l0 != l1 && l0 != l2);
  CHECK(mr_rooms_find(&r, long1, 998) == NULL);
  CHECK(mr_rooms_find(&r, "abcde", 5) == NULL);
  CHECK(mr_rooms_find(&r, "A", 1) == NULL);
  CHECK(mr_rooms_find(&r, "\0\0\0", 3) == NULL);
  CHECK(mr_rooms_find(&r, "salle-\xC3", 7) == NULL);

  /* Leaving "a" leaves "ab", "a\0" and the rest alone. */
  CHECK_EQ_INT(mr_rooms_leave(&r, &m, "a", 1), 1);
  CHECK(mr_rooms_find(&r, "a", 1) == NULL);
  CHECK(mr_rooms_find(&r, "ab", 2) == rooms[1]);
  CHECK(mr_rooms_find(&r, "a\0", 2) == rooms[4]);
  CHECK_EQ_INT(r.nrooms, NODD + 2);
  CHECK_EQ_INT(rec.n, NODD + 3 + 1);
  if (rec.n <= MAX_EVENTS) {
    CHECK_EQ_INT(rec.ev[rec.n - 1].created, 0);
    CHECK_EQ_INT(rec.ev[rec.n - 1].len, 1);
    CHECK_STR(rec.ev[rec.n - 1].name, "a");
  }
  /* Leaving "a\0" (length 2) is not leaving "a\0b". */
  CHECK_EQ_INT(mr_rooms_leave(&r, &m, "a\0", 2), 1);
  CHECK(mr_rooms_find(&r, "a\0b", 3) == rooms[5]);
  CHECK_EQ_INT(mr_rooms_leave(&r, &m, "", 0), 1);
  CHECK(mr_rooms_find(&r, "", 0) == NULL);
  CHECK(mr_rooms_find(&r, "\0", 1) == rooms[7]);
  CHECK_EQ_INT(r.nrooms, NODD);

  mr_rooms_leave_all(&r, &m);
  mr_rooms_leave_all(&r, &n);
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK_EQ_INT(rec.n, 2 * (NODD + 3));
  mr_rooms_free(&r);
}

/* mr_rooms_free releases rooms that still have members (at shutdown). */
static void test_free_nonempty(void) {
  mr_rooms r;
  mr_rooms_init(&r, NULL, NULL);
  mr_member m[3] = {{0}};
  for (int i = 0; i < 3; i++) {
    join(&r, &m[i], "shared");
    join(&r, &m[i], i ? "other" : "mine");
  }
  CHECK_EQ_INT(r.nrooms, 3);
  mr_rooms_free(&r);
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK(r.by_name == NULL);
  for (int i = 0; i < 3; i++) /* the members are discarded, not left */
    free(m[i].links.many);    /* two rooms each: a heap array */
  /* The registry is usable again after free. */
  mr_member x = {0};
  CHECK_EQ_INT(join(&r, &x, "again"), 1);
  CHECK_EQ_INT(r.nrooms, 1);
  mr_rooms_leave_all(&r, &x);
  CHECK_EQ_INT(r.nrooms, 0);
  mr_rooms_free(&r);
}

/* A large room: members leave from the middle, the front and the back, and
 * every remaining back-pointer stays right. */
static void test_big_room(void) {
  enum { N = 1000 };
  mr_rooms r;
  mr_rooms_init(&r, NULL, NULL);
  mr_member *m = calloc(N, sizeof *m);
  if (!CHECK(m != NULL))
    return;
  for (int i = 0; i < N; i++)
    join(&r, &m[i], "big");
  mr_room *big = find(&r, "big");
  if (!CHECK(big != NULL && big->count == N))
    return;
  int in[N];
  for (int i = 0; i < N; i++)
    in[i] = 1;
  int left = N, bad = 0;
  for (int k = 0; k < N - 1; k++) {
    int i = k % 3 == 0 ? k / 3 : k % 3 == 1 ? N - 1 - k / 3 : (N / 2 + k) % N;
    if (!in[i])
      continue;
    if (leave(&r, &m[i], "big") != 1)
      bad++;
    in[i] = 0;
    left--;
    if (big->count != (uint32_t)left)
      bad++;
    for (uint32_t s = 0; s < big->count; s++) {
      mr_member *mm = big->members[s].member;
      if (mm < m || mm >= m + N || !in[mm - m] ||
          mr_member_links(mm)[big->members[s].link].room != big ||
          mr_member_links(mm)[big->members[s].link].slot != s)
        bad++;
    }
  }
  CHECK_EQ_INT(bad, 0);
  CHECK(find(&r, "big") == big);
  for (int i = 0; i < N; i++)
    mr_rooms_leave_all(&r, &m[i]);
  CHECK(find(&r, "big") == NULL);
  CHECK_EQ_INT(r.nrooms, 0);
  free(m);
  mr_rooms_free(&r);
}

/* ---- randomized model test ---- */

enum { NM = 100, NR = 20, NOPS = 20000 };

static const char *const rnames[NR] = {
    "a",
    "ab",
    "abc",
    "a\0b",
    "\xff\x00\xfe",
    "salle-\xC3\xA9t\xC3\xA9",
    "salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99",
    "",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "r16",
    "r17",
    "r18",
    "room-19"};
static const size_t rlens[NR] = {1, 2, 3, 3, 3, 11, 16, 0, 2, 2,
                                 3, 3, 3, 3, 3, 3,  3,  3, 3, 7};

/* Checks the registry against the model; returns the number of problems and
 * describes the first one. */
static int verify(const mr_rooms *r, mr_member *m, unsigned char model[NM][NR],
                  int op) {
  int bad = 0;
#define FAIL(...)                                                              \
  do {                                                                         \
    if (!bad++) {                                                              \
      fprintf(stderr, "  op %d: ", op);                                        \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)
  mr_room *rooms[NR];
  size_t live = 0;
  for (int j = 0; j < NR; j++) {
    unsigned want = 0;
    for (int i = 0; i < NM; i++)
      want += model[i][j];
    rooms[j] = mr_rooms_find(r, rnames[j], rlens[j]);
    if (!want) {
      if (rooms[j])
        FAIL("room %d exists but the model says empty", j);
      continue;
    }
    live++;
    mr_room *room = rooms[j];
    if (!room) {
      FAIL("room %d missing, model has %u members", j, want);
      continue;
    }
    if (room->name_len != rlens[j] || memcmp(room->name, rnames[j], rlens[j]) ||
        room->name[rlens[j]] != '\0')
      FAIL("room %d has the wrong name", j);
    if (room->count != want)
      FAIL("room %d count %u, model %u", j, room->count, want);
    if (room->count > room->cap)
      FAIL("room %d count %u over cap %u", j, room->count, room->cap);
    unsigned char seen[NM] = {0};
    for (uint32_t s = 0; s < room->count; s++) {
      mr_member *mm = room->members[s].member;
      if (mm < m || mm >= m + NM) {
        FAIL("room %d slot %u holds a foreign member", j, s);
        continue;
      }
      int i = (int)(mm - m);
      if (!model[i][j])
        FAIL("room %d holds member %d, not in the model", j, i);
      if (seen[i]++)
        FAIL("room %d holds member %d twice", j, i);
      uint32_t li = room->members[s].link;
      if (li >= mm->nlinks) {
        FAIL("room %d slot %u: link %u out of range", j, s, li);
        continue;
      }
      if (mr_member_links(mm)[li].room != room ||
          mr_member_links(mm)[li].slot != s)
        FAIL("room %d slot %u: back-pointer broken", j, s);
    }
  }
  if (r->nrooms != live)
    FAIL("nrooms %zu, model %zu", r->nrooms, live);
  if (HASH_COUNT(r->by_name) != live)
    FAIL("hash holds %u rooms, model %zu", HASH_COUNT(r->by_name), live);
  for (int i = 0; i < NM; i++) {
    unsigned want = 0;
    for (int j = 0; j < NR; j++)
      want += model[i][j];
    if (m[i].nlinks != want)
      FAIL("member %d nlinks %u, model %u", i, m[i].nlinks, want);
    if (m[i].nlinks > (m[i].cap > 1 ? m[i].cap : 1))
      FAIL("member %d nlinks over cap", i);
    for (uint32_t k = 0; k < m[i].nlinks; k++) {
      mr_room *room = mr_member_links(&m[i])[k].room;
      int j = 0;
      while (j < NR && rooms[j] != room)
        j++;
      if (j == NR) {
        FAIL("member %d link %u points at an unknown room", i, k);
        continue;
      }
      if (!model[i][j])
        FAIL("member %d linked to room %d, not in the model", i, j);
      uint32_t s = mr_member_links(&m[i])[k].slot;
      if (s >= room->count) {
        FAIL("member %d link %u: slot %u out of range", i, k, s);
        continue;
      }
      if (room->members[s].member != &m[i] || room->members[s].link != k)
        FAIL("member %d link %u: back-pointer broken", i, k);
    }
    for (int j = 0; j < NR; j++)
      if (rooms[j] && mr_rooms_is_member(&m[i], rooms[j]) != model[i][j])
        FAIL("is_member(%d, %d) disagrees with the model", i, j);
  }
#undef FAIL
  return bad;
}

static void test_random_model(void) {
  static unsigned char model[NM][NR];
  static mr_member m[NM];
  int creates[NR] = {0}, deletes[NR] = {0};
  int want_creates[NR] = {0}, want_deletes[NR] = {0};
  recorder rec = {0};
  rec.creates = creates;
  rec.deletes = deletes;
  rec.names = rnames;
  rec.lens = rlens;
  rec.nnames = NR;
  mr_rooms r;
  mr_rooms_init(&r, on_change, &rec);
  rec.rooms = &r;

  int bad_ret = 0, bad_state = 0, ops[3] = {0}, maxcount = 0;
  for (int op = 0; op < NOPS && bad_state == 0; op++) {
    int i = (int)(test_rng() % NM), j = (int)(test_rng() % NR);
    /* Alternate filling and draining phases, so that rooms grow large and
     * also empty out (and are re-created) many times. */
    int fill = (op / 2500) % 2 == 0;
    unsigned kind = (unsigned)(test_rng() % 100);
    if (fill)
      kind = kind < 65 ? 0 : kind < 98 ? 50 : 95;
    else
      kind = kind < 2 ? 0 : kind < 80 ? 50 : 95;
    unsigned cnt = 0;
    for (int k = 0; k < NM; k++)
      cnt += model[k][j];
    if (kind < 50) {
      ops[0]++;
      int want = !model[i][j];
      int got = mr_rooms_join(&r, &m[i], rnames[j], rlens[j]);
      if (got != want)
        bad_ret++;
      if (want && cnt == 0)
        want_creates[j]++;
      model[i][j] = 1;
    } else if (kind < 95) {
      ops[1]++;
      int want = model[i][j];
      int got = mr_rooms_leave(&r, &m[i], rnames[j], rlens[j]);
      if (got != want)
        bad_ret++;
      if (want && cnt == 1)
        want_deletes[j]++;
      model[i][j] = 0;
    } else {
      ops[2]++;
      for (int k = 0; k < NR; k++) {
        if (!model[i][k])
          continue;
        unsigned c = 0;
        for (int x = 0; x < NM; x++)
          c += model[x][k];
        if (c == 1)
          want_deletes[k]++;
        model[i][k] = 0;
      }
      mr_rooms_leave_all(&r, &m[i]);
      if (m[i].links.many != NULL || m[i].cap != 0)
        bad_ret++;
    }
    bad_state = verify(&r, m, model, op);
    for (int k = 0; k < NR; k++)
      if (creates[k] != want_creates[k] || deletes[k] != want_deletes[k]) {
        fprintf(stderr, "  op %d: room %d events %d/%d, model %d/%d\n", op, k,
                creates[k], deletes[k], want_creates[k], want_deletes[k]);
        bad_state++;
        break;
      }
    for (int k = 0; k < NR; k++) {
      mr_room *room = mr_rooms_find(&r, rnames[k], rlens[k]);
      if (room && (int)room->count > maxcount)
        maxcount = (int)room->count;
    }
  }
  CHECK_EQ_INT(bad_ret, 0);
  CHECK_EQ_INT(bad_state, 0);
  CHECK_EQ_INT(rec.unknown, 0);
  /* The run really exercised every path. */
  CHECK(ops[0] > 5000 && ops[1] > 5000 && ops[2] > 500);
  CHECK(maxcount >= 40);
  int total_creates = 0, total_deletes = 0;
  for (int k = 0; k < NR; k++) {
    total_creates += creates[k];
    total_deletes += deletes[k];
  }
  CHECK(total_creates > 50 && total_deletes > 50);

  for (int i = 0; i < NM; i++)
    mr_rooms_leave_all(&r, &m[i]);
  CHECK_EQ_INT(r.nrooms, 0);
  CHECK(r.by_name == NULL);
  total_deletes = 0;
  for (int k = 0; k < NR; k++)
    total_deletes += deletes[k];
  CHECK_EQ_INT(total_creates, total_deletes); /* every room created went away */
  mr_rooms_free(&r);
}

int main(void) {
  test_join_leave();
  test_no_callback();
  test_leave_all();
  test_names();
  test_free_nonempty();
  test_big_room();
  test_random_model();
  return test_report();
}

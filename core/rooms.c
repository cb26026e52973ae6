#include "rooms.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

void mr_rooms_init(mr_rooms *r, mr_room_cb on_change, void *ud) {
  r->by_name = NULL;
  r->nrooms = 0;
  r->on_change = on_change;
  r->ud = ud;
  r->on_count = NULL;
}

static void room_free(mr_room *room) {
  free(room->members);
  free(room->name);
  free(room);
}

void mr_rooms_free(mr_rooms *r) {
  mr_room *room, *tmp;
  HASH_ITER(hh, r->by_name, room, tmp) {
    HASH_DEL(r->by_name, room);
    room_free(room);
  }
  r->nrooms = 0;
}

mr_room *mr_rooms_find(const mr_rooms *r, const char *name, size_t len) {
  mr_room *room = NULL;
  HASH_FIND(hh, r->by_name, name, len, room);
  return room;
}

int mr_rooms_is_member(const mr_member *m, const mr_room *room) {
  /* A member is in few rooms, so scanning its links beats scanning the
   * room's (possibly huge) member array. */
  const mr_room_link *links = mr_member_links_const(m);
  for (uint32_t i = 0; i < m->nlinks; i++)
    if (links[i].room == room)
      return 1;
  return 0;
}

static int grow(void **arr, uint32_t *cap, size_t elem) {
  uint32_t ncap = *cap ? *cap * 2 : 4;
  void *n = realloc(*arr, elem * ncap);
  if (!n)
    return MR_ENOMEM;
  *arr = n;
  *cap = ncap;
  return 0;
}

/* Makes room for one more link of m: the inline one holds the first, a
 * heap array (4, then doubling) the rest. Returns 0 or MR_ENOMEM. */
static int reserve_link(mr_member *m) {
  if (m->cap > 1)
    return m->nlinks == m->cap
               ? grow((void **)&m->links.many, &m->cap, sizeof *m->links.many)
               : 0;
  if (m->nlinks == 0)
    return 0;
  mr_room_link *many = malloc(4 * sizeof *many);
  if (!many)
    return MR_ENOMEM;
  many[0] = m->links.one;
  m->links.many = many;
  m->cap = 4;
  return 0;
}

int mr_rooms_join(mr_rooms *r, mr_member *m, const char *name, size_t len) {
  mr_room *room = mr_rooms_find(r, name, len);
  if (room && mr_rooms_is_member(m, room))
    return 0;
  if (reserve_link(m) != 0)
    return MR_ENOMEM;
  int created = 0;
  if (!room) {
    room = calloc(1, sizeof *room);
    if (!room || !(room->name = malloc(len + 1))) {
      free(room);
      return MR_ENOMEM;
    }
    memcpy(room->name, name, len);
    room->name[len] = '\0';
    room->name_len = len;
    created = 1;
  }
  if (room->count == room->cap &&
      grow((void **)&room->members, &room->cap, sizeof *room->members) != 0) {
    if (created)
      room_free(room);
    return MR_ENOMEM;
  }
  if (created) {
    HASH_ADD_KEYPTR(hh, r->by_name, room->name, room->name_len, room);
    r->nrooms++;
  }
  room->members[room->count] = (mr_room_slot){m, m->nlinks};
  mr_member_links(m)[m->nlinks] = (mr_room_link){room, room->count};
  room->count++;
  m->nlinks++;
  if (created && r->on_change)
    r->on_change(r->ud, room, 1);
  if (r->on_count)
    r->on_count(r->ud, room);
  return 1;
}

/* Removes the link at index li of m, fixing the back-pointers of whatever
 * was swapped into the two vacated slots. */
static void unlink_at(mr_rooms *r, mr_member *m, uint32_t li) {
  mr_room_link *links = mr_member_links(m);
  mr_room *room = links[li].room;
  uint32_t slot = links[li].slot;

  /* Room side: move the last member into the vacated slot. */
  room->count--;
  if (slot != room->count) {
    room->members[slot] = room->members[room->count];
    mr_room_slot *moved = &room->members[slot];
    mr_member_links(moved->member)[moved->link].slot = slot;
  }
  /* Member side: move the last link into the vacated index. */
  m->nlinks--;
  if (li != m->nlinks) {
    links[li] = links[m->nlinks];
    mr_room_link *moved = &links[li];
    moved->room->members[moved->slot].link = li;
  }
  /* Back to the inline link once one room is left, so that a connection
   * that was briefly in two rooms holds no heap array while idle. */
  if (m->cap > 1 && m->nlinks <= 1) {
    mr_room_link keep = links[0];
    free(links);
    m->cap = 0;
    m->links.one = keep;
  }
  if (r->on_count)
    r->on_count(r->ud, room);
  if (room->count == 0) {
    if (r->on_change)
      r->on_change(r->ud, room, 0);
    HASH_DEL(r->by_name, room);
    r->nrooms--;
    room_free(room);
  }
}

int mr_rooms_leave(mr_rooms *r, mr_member *m, const char *name, size_t len) {
  mr_room *room = mr_rooms_find(r, name, len);
  if (!room)
    return 0;
  const mr_room_link *links = mr_member_links(m);
  for (uint32_t i = 0; i < m->nlinks; i++) {
    if (links[i].room == room) {
      unlink_at(r, m, i);
      return 1;
    }
  }
  return 0;
}

void mr_rooms_leave_all(mr_rooms *r, mr_member *m) {
  while (m->nlinks > 0)
    unlink_at(r, m, m->nlinks - 1);
  if (m->cap > 1)
    free(m->links.many);
  m->links.many = NULL;
  m->cap = 0;
}

/* Cluster wire format: pure encoders and decoders for node-to-node frames.
 *
 * Every frame on a node link is [u32 payload_len][payload], big-endian
 * (network order), where the payload starts with a one-byte tag. Nothing
 * here does I/O, touches libuv or keeps global state, so the unit tests and
 * fuzzers exercise exactly the code the server runs.
 *
 * Handshake (mutual HMAC-SHA256 proof of a shared cookie):
 *
 *   1. The dialer sends HELLO(version, name_d, addr_d, nonce_d).
 *   2. The acceptor checks the version, then replies
 *      HELLO(version, name_a, addr_a, nonce_a) followed by
 *      CHALLENGE(mac_a), where mac_a = mr_wire_auth_mac(cookie,
 *      MR_WIRE_LABEL_ACCEPTOR, nonce_d, nonce_a, name_a, name_d).
 *   3. The dialer recomputes mac_a, compares it with mr_wire_mac_equal, and
 *      only then sends AUTH(mac_d), where mac_d = mr_wire_auth_mac(cookie,
 *      MR_WIRE_LABEL_DIALER, nonce_d, nonce_a, name_d, name_a).
 *   4. The acceptor recomputes mac_d and compares it.
 *
 * Either side that sees a wrong version, a wrong MAC, an unexpected tag or a
 * malformed frame during the handshake drops the link without saying why;
 * no other tag is accepted before the handshake completes. Both nonces are
 * fresh per link, so a recorded proof cannot be replayed; the direction
 * label differs, so a dialer's proof cannot be reflected back as an
 * acceptor's proof (or vice versa); the names are bound in, so a proof made
 * for one pair of nodes is useless for another. The nonces always enter the
 * MAC in the order (dialer, acceptor), whichever side computes it.
 *
 * This authenticates the peer at link setup only: later frames are neither
 * encrypted nor integrity-protected, so cluster links belong on a trusted
 * network (or inside a tunnel). */
#ifndef MR_WIRE_H
#define MR_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* The protocol version carried in HELLO. A node refuses a peer whose
 * version differs, so incompatible layouts never meet on a link. */
#define MR_WIRE_VERSION 1u

/* Largest payload a link accepts by default; a frame announcing more is
 * refused by mr_wire_next_frame. The server raises this to cover
 * --max-message plus headroom for the room name. */
#define MR_WIRE_DEFAULT_MAX_FRAME (16u * 1024 * 1024 + 1024)
/* Room names are 1..65535 bytes of UTF-8 (the u16 length on the wire). */
#define MR_WIRE_MAX_ROOM 65535u
/* Node names and dial addresses are 1..255 bytes of UTF-8 without control
 * characters, so they can be logged and turned into C strings safely. */
#define MR_WIRE_MAX_NAME 255u
#define MR_WIRE_NONCE_LEN 32u
#define MR_WIRE_MAC_LEN 32u
/* The u32 length prefix in front of every payload. */
#define MR_WIRE_PREFIX_LEN 4u

/* Direction labels for mr_wire_auth_mac; see the handshake above. */
#define MR_WIRE_LABEL_DIALER "moonroom-dialer"
#define MR_WIRE_LABEL_ACCEPTOR "moonroom-acceptor"

/* Payload layouts after the tag byte. All integers are big-endian; every
 * string is a length-prefixed byte run with no terminator. A payload with
 * bytes left over after its last field is malformed. */
enum mr_wire_tag {
  /* [u8 version][u16 name_len][name][u16 addr_len][addr][32 nonce].
   * The sender's node name, the address other nodes dial to reach it
   * (e.g. "127.0.0.1:7001"), and its fresh handshake nonce. */
  MR_WIRE_HELLO = 0x01,
  /* [32 mac]. The acceptor's proof (mac_a), sent right after its HELLO. */
  MR_WIRE_CHALLENGE = 0x02,
  /* [32 mac]. The dialer's proof (mac_d), sent after it verified mac_a. */
  MR_WIRE_AUTH = 0x03,
  /* [u16 count] count * ([u16 name_len][name][u16 addr_len][addr]).
   * The nodes the sender knows, so the receiver can dial the ones it is
   * not linked to yet (full mesh). */
  MR_WIRE_PEERS = 0x10,
  /* [u8 op][u16 room_len][room], op 1 = add, 0 = remove. The sender gained
   * its first local member in the room, or lost its last one. */
  MR_WIRE_INTEREST = 0x11,
  /* [u32 count] count * ([u16 room_len][room]). Every room the sender has
   * local members in, sent once after the handshake; it replaces whatever
   * the receiver believed about the sender's rooms. */
  MR_WIRE_INTEREST_ALL = 0x12,
  /* [u64 token]. A liveness probe; the token is opaque to the receiver. */
  MR_WIRE_PING = 0x13,
  /* [u64 token]. The answer to PING, echoing its token (e.g. a send time,
   * which lets the prober measure the round trip without keeping state). */
  MR_WIRE_PONG = 0x14,
  /* [u16 room_len][room][u32 msg_len][msg]. A broadcast of a text message
   * to the local members of room; msg must be valid UTF-8. */
  MR_WIRE_ROOM_TEXT = 0x1E,
  /* The same layout as ROOM_TEXT with an arbitrary binary msg. */
  MR_WIRE_ROOM_BINARY = 0x1F,
  /* [u8 flags][u32 count] count * ([u16 room_len][room][u32 members]).
   * The number of local members the sender has in each room now (0: none
   * any more). Absolute, not a difference, so a repeated or reordered
   * update cannot make counts drift. flags: MR_WIRE_SYNC_*. */
  MR_WIRE_COUNTS = 0x20,
  /* [u8 flags][u32 count] count * ([u8 op][u16 room_len][room][u64 id]
   * [u32 meta_len][meta]). The sender's own presence entries: op 1 = the
   * connection id is tracked in room with meta (new or replaced), op 0 =
   * it no longer is (meta_len 0). meta is opaque bytes to the wire (the
   * API's encoding, presence.h). flags: MR_WIRE_SYNC_*. */
  MR_WIRE_PRESENCE = 0x21
};

/* Flags of COUNTS and PRESENCE. A full state is one or more frames of one
 * tag, the first with SYNC_FIRST and the last with SYNC_LAST (one frame
 * may carry both): whatever the receiver held from the sender and that the
 * full state does not mention is gone once SYNC_LAST arrives. A frame
 * without flags is a batch of changes. Other bits are malformed. */
#define MR_WIRE_SYNC_FIRST 0x01u
#define MR_WIRE_SYNC_LAST 0x02u

/* One PRESENCE entry, as decoded (pointers into the payload). */
typedef struct {
  int join; /* 1: tracked with meta, 0: untracked */
  const char *room;
  size_t room_len;
  uint64_t id;
  const uint8_t *meta;
  size_t meta_len;
} mr_wire_presence_entry;

/* A growable output buffer. Frames are appended at data + len. Zero it with
 * mr_wire_buf_init before first use and release it with mr_wire_buf_free. */
typedef struct {
  uint8_t *data;
  size_t len, cap;
} mr_wbuf;

/* A (node name, dial address) pair, for PEERS. When filled by the decoder,
 * both point into the payload and are not NUL-terminated. */
typedef struct {
  const char *name;
  size_t name_len;
  const char *addr;
  size_t addr_len;
} mr_wire_peer;

/* A validated list (PEERS or INTEREST_ALL) inside a decoded payload. Read
 * its entries with mr_wire_iter_init and mr_wire_*_next. */
typedef struct {
  uint32_t count;
  const uint8_t *entries; /* points into the payload */
  size_t entries_len;
} mr_wire_list;

/* A cursor over a mr_wire_list; the fields are private to wire.c. */
typedef struct {
  const uint8_t *pos, *end;
  uint32_t left;
} mr_wire_iter;

/* One decoded payload. Every pointer points into the payload buffer that
 * was passed to mr_wire_decode, which must outlive this struct; strings are
 * not NUL-terminated. Only the member named after the tag is meaningful. */
typedef struct {
  uint8_t tag;       /* the payload's first byte, set even on errors */
  const char *error; /* static reason on failure, NULL on success */
  union {
    struct {
      uint8_t version;
      const char *name;
      size_t name_len;
      const char *addr;
      size_t addr_len;
      const uint8_t *nonce; /* MR_WIRE_NONCE_LEN bytes */
    } hello;
    struct {
      const uint8_t *mac; /* MR_WIRE_MAC_LEN bytes */
    } auth;               /* CHALLENGE and AUTH */
    mr_wire_list peers;   /* PEERS */
    mr_wire_list rooms;   /* INTEREST_ALL */
    struct {
      uint8_t flags; /* MR_WIRE_SYNC_* */
      mr_wire_list list;
    } state; /* COUNTS and PRESENCE */
    struct {
      int add; /* 1 = add, 0 = remove */
      const char *room;
      size_t room_len;
    } interest;
    struct {
      uint64_t token;
    } ping; /* PING and PONG */
    struct {
      int binary; /* 0 for ROOM_TEXT, 1 for ROOM_BINARY */
      const char *room;
      size_t room_len;
      const uint8_t *data;
      size_t data_len;
    } room; /* ROOM_TEXT and ROOM_BINARY */
  };
} mr_wire_msg;

/* ---- Output buffer ---- */

/* Sets an empty buffer that owns no memory. */
void mr_wire_buf_init(mr_wbuf *b);
/* Frees the buffer's memory (owned by the buffer) and empties it. */
void mr_wire_buf_free(mr_wbuf *b);
/* Forgets the contents but keeps the memory for reuse. */
void mr_wire_buf_reset(mr_wbuf *b);
/* Ensures room for extra more bytes after len. The buffer keeps owning its
 * memory, which may move. Returns 0 or MR_ENOMEM (then b is unchanged). */
int mr_wire_buf_reserve(mr_wbuf *b, size_t extra);

/* ---- Encoders ----
 *
 * Each encoder appends one whole frame, u32 length prefix included, to out;
 * out owns the memory and the caller keeps owning the inputs, which are only
 * read. On error nothing is appended (out->len is unchanged). Errors:
 * MR_EINVAL for a length outside its range (an empty room or name, a room
 * over MR_WIRE_MAX_ROOM, a name over MR_WIRE_MAX_NAME), MR_EUTF8 for a room
 * or name that is not valid UTF-8 or a name with control characters,
 * MR_ETOOBIG for a payload that does not fit the u32 length, MR_ENOMEM. */

/* HELLO with MR_WIRE_VERSION; nonce is MR_WIRE_NONCE_LEN bytes. */
int mr_wire_encode_hello(mr_wbuf *out, const char *name, size_t name_len,
                         const char *addr, size_t addr_len,
                         const uint8_t nonce[32]);
/* CHALLENGE carrying the acceptor's proof. */
int mr_wire_encode_challenge(mr_wbuf *out, const uint8_t mac[32]);
/* AUTH carrying the dialer's proof. */
int mr_wire_encode_auth(mr_wbuf *out, const uint8_t mac[32]);
/* INTEREST: add is nonzero to add the room, zero to remove it. */
int mr_wire_encode_interest(mr_wbuf *out, int add, const char *room,
                            size_t room_len);
/* PING and PONG with an opaque token (PONG echoes the PING's token). */
int mr_wire_encode_ping(mr_wbuf *out, uint64_t token);
int mr_wire_encode_pong(mr_wbuf *out, uint64_t token);

/* ROOM_TEXT (binary == 0) or ROOM_BINARY (binary != 0). The buffer grows
 * once to the exact frame size and msg is copied into it once. For text the
 * caller guarantees msg is valid UTF-8 (a WebSocket text frame already is;
 * check anything else with mr_utf8_valid), because a receiving node treats
 * invalid text as a protocol violation and drops the link. */
int mr_wire_encode_room(mr_wbuf *out, int binary, const char *room,
                        size_t room_len, const uint8_t *msg, size_t msg_len);
/* Appends everything of a room frame except the msg_len bytes of msg, for a
 * scatter write (header from out, then the caller's own msg buffer) that
 * shares one message buffer among all peers. The frame is only complete
 * once exactly msg_len bytes follow it on the link. */
int mr_wire_encode_room_header(mr_wbuf *out, int binary, const char *room,
                               size_t room_len, size_t msg_len);

/* List frames are built incrementally: *_begin appends a frame with an
 * empty list and stores its offset in out (not a pointer, since the buffer
 * may move) into *frame; each *_add appends one entry and updates the count
 * and length prefix in place, so the frame is complete after every call.
 * The frame must still be the last thing in out when adding (MR_EINVAL
 * otherwise). PEERS holds at most 65535 entries (MR_ETOOBIG beyond).
 * Keep the receiver's max_frame in mind for very long lists. */
int mr_wire_encode_peers_begin(mr_wbuf *out, size_t *frame);
int mr_wire_encode_peers_add(mr_wbuf *out, size_t frame, const char *name,
                             size_t name_len, const char *addr,
                             size_t addr_len);
int mr_wire_encode_interest_all_begin(mr_wbuf *out, size_t *frame);
int mr_wire_encode_interest_all_add(mr_wbuf *out, size_t frame,
                                    const char *room, size_t room_len);

/* COUNTS and PRESENCE are list frames too, begun with their flags
 * (MR_WIRE_SYNC_*; MR_EINVAL for other bits). A PRESENCE entry's meta is
 * at most MR_WIRE_MAX_META bytes (MR_EINVAL beyond); a leave (join == 0)
 * carries no meta. */
#define MR_WIRE_MAX_META 65535u
int mr_wire_encode_counts_begin(mr_wbuf *out, unsigned flags, size_t *frame);
int mr_wire_encode_counts_add(mr_wbuf *out, size_t frame, const char *room,
                              size_t room_len, uint32_t members);
int mr_wire_encode_presence_begin(mr_wbuf *out, unsigned flags, size_t *frame);
int mr_wire_encode_presence_add(mr_wbuf *out, size_t frame, int join,
                                const char *room, size_t room_len, uint64_t id,
                                const uint8_t *meta, size_t meta_len);

/* Presence meta: a flat map of string keys to strings, numbers and
 * booleans, the bytes a PRESENCE entry carries:
 *   [u16 count] count * ([u8 key_len][key][u8 type][value])
 * key 1..255 bytes of UTF-8; type 0 = false, 1 = true (no value),
 * 2 = number ([u64] the IEEE 754 double's bits), 3 = string
 * ([u16 len][UTF-8 bytes]). Keys are strictly increasing (bytewise, then
 * shorter first), so one map has one encoding and equal maps compare
 * equal as bytes. The decoder of PRESENCE checks every meta it carries. */
enum {
  MR_META_FALSE = 0,
  MR_META_TRUE = 1,
  MR_META_NUMBER = 2,
  MR_META_STRING = 3
};
typedef struct {
  const char *key;
  size_t key_len;
  int type; /* MR_META_* */
  double num;
  const char *str;
  size_t str_len;
} mr_wire_meta_field;
/* Appends an empty map ([u16 0]) and its offset in out to *at. */
int mr_wire_meta_begin(mr_wbuf *out, size_t *at);
/* Appends one field to the map at at, which must end at out->len. Keys
 * must be added in increasing order (MR_EINVAL otherwise, or for a key
 * outside 1..255 bytes, a 65,536th field or a string over 65,535 bytes;
 * MR_EUTF8 for a key or string that is not UTF-8; MR_ENOMEM). */
int mr_wire_meta_add(mr_wbuf *out, size_t at, const mr_wire_meta_field *f);
/* Checks a whole encoded map: 0, or MR_EPROTO / MR_EUTF8. */
int mr_wire_meta_check(const uint8_t *meta, size_t len);
/* Reads the fields of a map that passed mr_wire_meta_check: set *pos to
 * meta and *left to its length first, then call until it returns 0. */
int mr_wire_meta_next(const uint8_t **pos, size_t *left, mr_wire_meta_field *f);

/* Sets SYNC_LAST on the COUNTS or PRESENCE frame at frame in out. */
void mr_wire_state_mark_last(mr_wbuf *out, size_t frame);

/* ---- Decoders ---- */

/* Finds the first complete frame in a received byte stream buf[0..len).
 * On 0, *payload points into buf (the caller keeps owning it),
 * *payload_len is at least 1, and *consumed = MR_WIRE_PREFIX_LEN +
 * *payload_len bytes are to be dropped from the stream afterwards.
 * Returns MR_EAGAIN while the frame is incomplete, MR_ETOOBIG as soon as
 * the length prefix announces more than max_frame (before the payload has
 * arrived), MR_EPROTO for a zero length. The out parameters are only
 * written on 0. Both errors other than MR_EAGAIN mean: drop the link. */
int mr_wire_next_frame(const uint8_t *buf, size_t len, size_t max_frame,
                       const uint8_t **payload, size_t *payload_len,
                       size_t *consumed);

/* Decodes one payload (as returned by mr_wire_next_frame) into msg without
 * copying: msg's pointers point into payload, which the caller keeps owning
 * and must keep alive while msg is used. Checks every length against the
 * bytes that remain, rejects trailing bytes, validates UTF-8 in room names,
 * node names, addresses and text messages.
 * Returns 0 on success (msg->error is NULL); MR_ENOTFOUND for an unknown
 * tag (msg->tag holds it; the caller may skip and count the frame);
 * MR_EUTF8 for invalid UTF-8 or control characters where text belongs;
 * MR_EPROTO for anything else malformed, including a HELLO whose version is
 * not MR_WIRE_VERSION (msg->hello.version then holds it). On every error
 * msg->error is a static reason string for the log line; every error other
 * than MR_ENOTFOUND means the peer is broken or hostile: drop the link. */
int mr_wire_decode(const uint8_t *payload, size_t len, mr_wire_msg *msg);

/* Starts iterating a decoded PEERS, INTEREST_ALL, COUNTS or PRESENCE
 * message; msg must have
 * been returned by a successful mr_wire_decode and its payload be alive. */
void mr_wire_iter_init(mr_wire_iter *it, const mr_wire_msg *msg);
/* Produces the next entry of a PEERS iteration into *peer (pointers into
 * the payload). Returns 1 for an entry, 0 when the list is exhausted. */
int mr_wire_peers_next(mr_wire_iter *it, mr_wire_peer *peer);
/* Produces the next room of an INTEREST_ALL iteration (pointer into the
 * payload). Returns 1 for an entry, 0 when the list is exhausted. */
int mr_wire_rooms_next(mr_wire_iter *it, const char **room, size_t *room_len);

/* Produces the next entry of a COUNTS iteration. Returns 1 for an entry,
 * 0 when the list is exhausted. */
int mr_wire_counts_next(mr_wire_iter *it, const char **room, size_t *room_len,
                        uint32_t *members);
/* Produces the next entry of a PRESENCE iteration into *e. Returns 1 for
 * an entry, 0 when the list is exhausted. */
int mr_wire_presence_next(mr_wire_iter *it, mr_wire_presence_entry *e);

/* ---- Authentication (OpenSSL libcrypto) ---- */

/* Fills out with 32 bytes from the OpenSSL CSPRNG. Returns 0, or MR_EAUTH
 * when the generator fails; the caller must then drop the link, because a
 * predictable nonce would allow replaying an old handshake. */
__attribute__((warn_unused_result)) int mr_wire_nonce(uint8_t out[32]);

/* Computes the handshake proof into out:
 *   HMAC-SHA256(key = cookie,
 *               u32 len(label) || label || nonce_dialer || nonce_acceptor ||
 *               u32 len(from_name) || from_name ||
 *               u32 len(to_name) || to_name)
 * where label is MR_WIRE_LABEL_DIALER or MR_WIRE_LABEL_ACCEPTOR (the
 * prover's role), from_name the prover's node name and to_name the
 * verifier's; the strings are NUL-terminated and the terminators are not
 * hashed. Every variable field is length-prefixed so that no two different
 * inputs hash the same bytes. Returns 0; MR_EINVAL for an empty cookie (an
 * empty key proves nothing); MR_EAUTH when libcrypto fails, in which case
 * out is zeroed and the caller must drop the link rather than send or
 * compare it. */
__attribute__((warn_unused_result)) int
mr_wire_auth_mac(const char *cookie, size_t cookie_len,
                 const char *direction_label, const uint8_t nonce_dialer[32],
                 const uint8_t nonce_acceptor[32], const char *from_name,
                 const char *to_name, uint8_t out[32]);

/* Compares two MACs in constant time (CRYPTO_memcmp), so the time taken
 * leaks nothing about how many leading bytes matched. Returns 1 when
 * equal, 0 otherwise. */
int mr_wire_mac_equal(const uint8_t a[32], const uint8_t b[32]);

#endif

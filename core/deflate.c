#include "deflate.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "codec.h"
#include "error.h"

/* deflate's memory level: 8 is zlib's default, (1 << (8 + 9)) = 128 KiB of
 * hash tables per stream; with one stream per window size in use at most,
 * a smaller one would save little and cost ratio. */
#define MEM_LEVEL 8

/* The first header byte's RSV1 bit: "this message is compressed". */
#define RSV1 0x40

/* An inflated message's first buffer is this many times its compressed
 * size (and at least INFLATE_MIN_CAP), then doubles up to the limit. */
#define INFLATE_RATIO 4
#define INFLATE_MIN_CAP 256

/* What RFC 7692 7.2.1 makes a sender strip from every message: the end of
 * the empty stored block that Z_SYNC_FLUSH writes. */
static const uint8_t sync_tail[4] = {0x00, 0x00, 0xff, 0xff};

struct mr_zpool {
  int level;
  z_stream *inflater;                           /* idle and reset, or NULL */
  z_stream *deflaters[MR_DEFLATE_MAX_BITS + 1]; /* idle, by window size */
};

mr_zpool *mr_zpool_new(int level) {
  mr_zpool *p = calloc(1, sizeof *p);
  if (p)
    p->level = level;
  return p;
}

void mr_zpool_free(mr_zpool *p) {
  if (!p)
    return;
  if (p->inflater) {
    inflateEnd(p->inflater);
    free(p->inflater);
  }
  for (int i = 0; i <= MR_DEFLATE_MAX_BITS; i++)
    if (p->deflaters[i]) {
      deflateEnd(p->deflaters[i]);
      free(p->deflaters[i]);
    }
  free(p);
}

unsigned mr_zpool_idle(const mr_zpool *p) {
  unsigned n = p->inflater != NULL;
  for (int i = 0; i <= MR_DEFLATE_MAX_BITS; i++)
    n += p->deflaters[i] != NULL;
  return n;
}

/* Takes the idle inflater or makes one; NULL when out of memory. */
static z_stream *take_inflater(mr_zpool *p) {
  z_stream *z = p->inflater;
  if (z) {
    p->inflater = NULL;
    return z;
  }
  if (!(z = calloc(1, sizeof *z)))
    return NULL;
  /* Raw deflate (no zlib header), with the largest window: it reads data
   * made with any smaller one, whatever client_max_window_bits said. */
  if (inflateInit2(z, -15) != Z_OK) {
    free(z);
    return NULL;
  }
  return z;
}

/* Resets z for the next message and keeps it, or frees it when the slot
 * is taken. */
static void give_inflater(mr_zpool *p, z_stream *z) {
  if (!p->inflater && inflateReset(z) == Z_OK) {
    p->inflater = z;
    return;
  }
  inflateEnd(z);
  free(z);
}

/* Everything of the message has been read and inflate stopped between
 * blocks (zlib's data_type says so with 128), or after a final block. */
static int at_block_boundary(const z_stream *z) {
  return (z->data_type & 128) != 0;
}

int mr_inflate_message(mr_zpool *p, const uint8_t *in, size_t len, size_t max,
                       uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  /* No payload at all is not valid deflate once the tail is appended (the
   * tail lacks its block header), but it can only mean an empty message,
   * and some clients send it so. */
  if (len == 0)
    return 0;
  z_stream *z = take_inflater(p);
  if (!z)
    return MR_ENOMEM;
  size_t cap = len > (max - 1) / INFLATE_RATIO ? max : len * INFLATE_RATIO;
  if (cap < INFLATE_MIN_CAP)
    cap = INFLATE_MIN_CAP;
  /* One byte over the limit: producing it proves the message too big. */
  if (cap > max)
    cap = max + 1;
  uint8_t *buf = malloc(cap);
  int rc = 0;
  if (!buf) {
    rc = MR_ENOMEM;
    goto done;
  }
  z->next_in = (uint8_t *)in;
  z->avail_in = 0;
  size_t in_left = len; /* zlib counts in uInt: feed at most that at once */
  int tail_fed = 0;
  z->next_out = buf;
  z->avail_out = (uInt)cap;
  for (;;) {
    if (z->avail_in == 0 && in_left > 0) {
      z->avail_in = in_left > UINT32_MAX ? UINT32_MAX : (uInt)in_left;
      in_left -= z->avail_in;
    } else if (z->avail_in == 0 && !tail_fed) {
      z->next_in = (uint8_t *)sync_tail;
      z->avail_in = sizeof sync_tail;
      tail_fed = 1;
    }
    int r = inflate(z, Z_SYNC_FLUSH);
    size_t have = (size_t)(z->next_out - buf);
    if (have > max) {
      rc = MR_ETOOBIG;
      goto done;
    }
    if (r == Z_STREAM_END)
      break; /* a final block: what follows it (our tail) is ignored */
    if (r == Z_MEM_ERROR) {
      rc = MR_ENOMEM;
      goto done;
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      rc = MR_EDEFLATE;
      goto done;
    }
    if (z->avail_out == 0) {
      size_t ncap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        rc = MR_ENOMEM;
        goto done;
      }
      buf = nb;
      cap = ncap;
      z->next_out = buf + have;
      z->avail_out = (uInt)(cap - have);
      continue;
    }
    if (z->avail_in == 0 && in_left == 0 && tail_fed) {
      /* All input read and room left over: everything is out. Data cut
       * in the middle of a block is corrupt, not a shorter message. */
      if (!at_block_boundary(z))
        rc = MR_EDEFLATE;
      break;
    }
    if (r == Z_BUF_ERROR) {
      /* No progress with input and room for output: cannot happen with
       * valid data, so it is not valid. */
      rc = MR_EDEFLATE;
      goto done;
    }
  }
  if (rc == 0) {
    *out_len = (size_t)(z->next_out - buf);
    if (*out_len) {
      *out = buf;
      buf = NULL;
    }
  }
done:
  free(buf);
  give_inflater(p, z);
  return rc;
}

/* Takes the idle deflater for a window of bits or makes one; NULL when out
 * of memory. */
static z_stream *take_deflater(mr_zpool *p, unsigned bits) {
  z_stream *z = p->deflaters[bits];
  if (z) {
    p->deflaters[bits] = NULL;
    return z;
  }
  if (!(z = calloc(1, sizeof *z)))
    return NULL;
  if (deflateInit2(z, p->level, Z_DEFLATED, -(int)bits, MEM_LEVEL,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    free(z);
    return NULL;
  }
  return z;
}

static void give_deflater(mr_zpool *p, unsigned bits, z_stream *z) {
  if (!p->deflaters[bits] && deflateReset(z) == Z_OK) {
    p->deflaters[bits] = z;
    return;
  }
  deflateEnd(z);
  free(z);
}

int mr_deflate_frame(mr_zpool *p, int opcode, unsigned bits, const void *msg,
                     size_t len, mr_buf **frame) {
  *frame = NULL;
  if (bits < MR_DEFLATE_MIN_BITS || bits > MR_DEFLATE_MAX_BITS)
    bits = MR_DEFLATE_MAX_BITS;
  if (len > UINT32_MAX)
    return 0; /* beyond one zlib call; sent plain */
  z_stream *z = take_deflater(p, bits);
  if (!z)
    return MR_ENOMEM;
  /* deflateBound is for Z_FINISH; a sync flush adds an empty stored block
   * (at most 5 bytes, and up to a byte of padding). */
  size_t bound = deflateBound(z, (uLong)len) + 16;
  mr_buf *b = mr_buf_new(MR_FRAME_HEADER_MAX + bound);
  if (!b) {
    give_deflater(p, bits, z);
    return MR_ENOMEM;
  }
  uint8_t *payload = b->data + MR_FRAME_HEADER_MAX;
  z->next_in = (uint8_t *)msg;
  z->avail_in = (uInt)len;
  z->next_out = payload;
  z->avail_out = (uInt)bound;
  int r = deflate(z, Z_SYNC_FLUSH);
  size_t n = bound - z->avail_out;
  int complete = r == Z_OK && z->avail_in == 0 && z->avail_out > 0;
  give_deflater(p, bits, z);
  if (!complete) {
    mr_buf_release(b);
    return r == Z_MEM_ERROR ? MR_ENOMEM : 0;
  }
  if (n >= sizeof sync_tail &&
      memcmp(payload + n - sizeof sync_tail, sync_tail, sizeof sync_tail) == 0)
    n -= sizeof sync_tail;
  size_t hl = mr_frame_header_len(n);
  if (hl + n >= mr_frame_header_len(len) + len) {
    mr_buf_release(b);
    return 0;
  }
  /* The block was sized for the worst case; a queue may hold it for a
   * while, so a much smaller result is copied into a block of its size. */
  mr_buf *f = b->len - (hl + n) > 4096 ? mr_buf_new(hl + n) : NULL;
  if (f) {
    memcpy(f->data + hl, payload, n);
    mr_buf_release(b);
  } else {
    f = b;
    memmove(f->data + hl, payload, n);
  }
  mr_frame_write_header(f->data, opcode, n);
  f->data[0] |= RSV1;
  f->len = hl + n;
  *frame = f;
  return 0;
}

/* The kit's client side of the wire: encode(), decode() and accept_key()
 * of the `moonroom.sim` module, so that specs speak real RFC 6455 frames to
 * the real core, as a client would; deflate() and inflate() for the
 * messages of a connection that negotiated permessage-deflate. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "codec.h"
#include "http.h"
#include "testkit_codec.h"

static const uint8_t default_mask[4] = {0x9e, 0x37, 0x79, 0xb9};

/* encode(opcode, payload [, fin=true [, mask=true [, rsv=0]]]) -> bytes
 * A client frame: masked (with a fixed key, so runs are repeatable) unless
 * mask is false; mask may also be a 4-byte key. */
static int l_encode(lua_State *L) {
  int op = luaL_checkint(L, 1);
  size_t len;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 2, &len);
  int fin = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
  int masked = 1;
  uint8_t key[4];
  memcpy(key, default_mask, 4);
  if (lua_type(L, 4) == LUA_TSTRING) {
    size_t klen;
    const char *k = lua_tolstring(L, 4, &klen);
    luaL_argcheck(L, klen == 4, 4, "mask key must be 4 bytes");
    memcpy(key, k, 4);
  } else if (!lua_isnoneornil(L, 4)) {
    masked = lua_toboolean(L, 4);
  }
  int rsv = luaL_optint(L, 5, 0);
  luaL_argcheck(L, op >= 0 && op <= 15, 1, "opcode must be 0..15");
  luaL_argcheck(L, rsv >= 0 && rsv <= 7, 5, "rsv must be 0..7");

  uint8_t h[MR_FRAME_HEADER_MAX];
  size_t hl =
      mr_frame_write_client_header(h, fin, rsv, op, len, masked ? key : NULL);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, (const char *)h, hl);
  if (!masked) {
    luaL_addlstring(&b, (const char *)p, len);
  } else {
    /* The buffer hands out at most LUAL_BUFFERSIZE bytes at a time, so the
     * payload is masked straight into it piece by piece. */
    for (size_t i = 0; i < len;) {
      size_t n = len - i < LUAL_BUFFERSIZE ? len - i : LUAL_BUFFERSIZE;
      mr_frame_mask((uint8_t *)luaL_prepbuffer(&b), p + i, n, key, i);
      luaL_addsize(&b, n);
      i += n;
    }
  }
  luaL_pushresult(&b);
  return 1;
}

/* decode(bytes [, pos=1]) -> { frame, ... }, next_pos
 * Each frame: { opcode=, fin=, rsv=, masked=, minimal=, payload= }; decoding
 * stops at the first incomplete frame, whose start is next_pos. */
static int l_decode(lua_State *L) {
  size_t len;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
  lua_Integer start = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, start >= 1 && (size_t)start <= len + 1, 2,
                "position out of range");
  size_t pos = (size_t)start - 1;
  lua_newtable(L);
  int nframes = 0;
  while (len - pos >= 2) {
    uint8_t b0 = p[pos], b1 = p[pos + 1];
    size_t hl = 2;
    uint64_t plen = b1 & 0x7f;
    int minimal = 1;
    if (plen == 126) {
      if (len - pos < 4)
        break;
      plen = (uint64_t)p[pos + 2] << 8 | p[pos + 3];
      minimal = plen >= 126;
      hl = 4;
    } else if (plen == 127) {
      if (len - pos < 10)
        break;
      plen = 0;
      for (int i = 0; i < 8; i++)
        plen = plen << 8 | p[pos + 2 + i];
      minimal = plen > 0xffff && !(plen >> 63);
      hl = 10;
    }
    int masked = (b1 & 0x80) != 0;
    uint8_t key[4] = {0, 0, 0, 0};
    if (masked) {
      if (len - pos < hl + 4)
        break;
      memcpy(key, p + pos + hl, 4);
      hl += 4;
    }
    if (len - pos - hl < plen)
      break;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, b0 & 0x0f);
    lua_setfield(L, -2, "opcode");
    lua_pushboolean(L, (b0 & 0x80) != 0);
    lua_setfield(L, -2, "fin");
    lua_pushinteger(L, (b0 >> 4) & 7);
    lua_setfield(L, -2, "rsv");
    lua_pushboolean(L, masked);
    lua_setfield(L, -2, "masked");
    lua_pushboolean(L, minimal);
    lua_setfield(L, -2, "minimal");
    const uint8_t *data = p + pos + hl;
    if (masked) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (size_t i = 0; i < plen; i++)
        luaL_addchar(&b, (char)(data[i] ^ key[i & 3]));
      luaL_pushresult(&b);
    } else {
      lua_pushlstring(L, (const char *)data, (size_t)plen);
    }
    lua_setfield(L, -2, "payload");
    lua_rawseti(L, -2, ++nframes);
    pos += hl + (size_t)plen;
  }
  lua_pushinteger(L, (lua_Integer)pos + 1);
  return 2;
}

/* accept_key(key) -> the Sec-WebSocket-Accept value the server must send */
static int l_accept_key(lua_State *L) {
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  char out[29];
  if (mr_http_accept_key(key, len, out) != 0)
    return luaL_error(L, "out of memory");
  lua_pushstring(L, out);
  return 1;
}

/* The permessage-deflate tail a sender strips (RFC 7692 7.2.1). */
static const uint8_t sync_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* deflate(data [, bits=15]) -> payload
 * A message compressed as a client compresses it for permessage-deflate
 * with no context takeover: raw deflate, a sync flush, the tail stripped.
 * The kit's own zlib calls, not the server's, so a spec checks the server
 * against an independent encoder. */
static int l_deflate(lua_State *L) {
  size_t len;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
  int bits = luaL_optint(L, 2, 15);
  luaL_argcheck(L, bits >= 9 && bits <= 15, 2, "window bits must be 9..15");
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    return luaL_error(L, "deflateInit2 failed");
  size_t cap = deflateBound(&z, (uLong)len) + 16;
  uint8_t *out = malloc(cap);
  if (!out) {
    deflateEnd(&z);
    return luaL_error(L, "out of memory");
  }
  z.next_in = (uint8_t *)p;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  int r = deflate(&z, Z_SYNC_FLUSH);
  size_t n = cap - z.avail_out;
  deflateEnd(&z);
  if (r != Z_OK) {
    free(out);
    return luaL_error(L, "deflate failed: %d", r);
  }
  if (n >= 4 && memcmp(out + n - 4, sync_tail, 4) == 0)
    n -= 4;
  lua_pushlstring(L, (const char *)out, n);
  free(out);
  return 1;
}

/* inflate(payload) -> data | nil, err
 * A compressed message from the server, inflated as a client does: the
 * tail put back, a fresh raw inflate with the largest window. */
static int l_inflate(lua_State *L) {
  size_t len;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -15) != Z_OK)
    return luaL_error(L, "inflateInit2 failed");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  int r = Z_OK;
  for (int part = 0; part < 2 && (r == Z_OK || r == Z_BUF_ERROR); part++) {
    z.next_in = part == 0 ? (uint8_t *)p : (uint8_t *)sync_tail;
    z.avail_in = part == 0 ? (uInt)len : 4;
    do {
      z.next_out = (uint8_t *)luaL_prepbuffer(&b);
      z.avail_out = LUAL_BUFFERSIZE;
      r = inflate(&z, Z_SYNC_FLUSH);
      luaL_addsize(&b, LUAL_BUFFERSIZE - z.avail_out);
    } while (r == Z_OK && z.avail_out == 0);
  }
  inflateEnd(&z);
  if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) {
    lua_pushnil(L);
    lua_pushfstring(L, "inflate failed: %s", z.msg ? z.msg : "corrupt data");
    return 2;
  }
  luaL_pushresult(&b);
  return 1;
}

const luaL_Reg mr_testkit_codec_funcs[] = {
    {"encode", l_encode},         {"decode", l_decode},
    {"accept_key", l_accept_key}, {"deflate", l_deflate},
    {"inflate", l_inflate},       {NULL, NULL}};

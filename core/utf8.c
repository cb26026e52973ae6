#include "utf8.h"

#include <string.h>

int mr_utf8_valid(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t c = s[i];
    if (c < 0x80) {
      /* Chat text is mostly ASCII, and a 16 MiB message is validated on
       * every hop, so skip eight ASCII bytes at a time when possible. */
      i++;
      while (len - i >= 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080))
          break;
        i += 8;
      }
      continue;
    }
    /* The lead byte decides how many continuation bytes follow and the
     * range of the first one; the narrowed ranges are what exclude
     * overlong forms (E0, F0), surrogates (ED) and values above U+10FFFF
     * (F4), exactly as in Unicode table 3-7. */
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c == 0xE0) {
      need = 2;
      lo = 0xA0;
    } else if (c == 0xED) {
      need = 2;
      hi = 0x9F;
    } else if (c >= 0xE1 && c <= 0xEF) {
      need = 2;
    } else if (c == 0xF0) {
      need = 3;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      need = 3;
    } else if (c == 0xF4) {
      need = 3;
      hi = 0x8F;
    } else {
      /* 80..BF cannot start a character, C0/C1 only start overlongs, and
       * F5..FF would encode values above U+10FFFF. */
      return 0;
    }
    if (len - i - 1 < need)
      return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t k = 2; k <= need; k++)
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
    i += need + 1;
  }
  return 1;
}

/* UTF-8 validation, shared by the cluster wire format (room and node names,
 * text messages from peers) and the Lua boundary. Pure. */
#ifndef MR_UTF8_H
#define MR_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Returns 1 when s[0..len) is well-formed UTF-8 per Unicode table 3-7:
 * no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF, no truncated sequence at the end. Returns 0 otherwise. An
 * empty string is valid. */
int mr_utf8_valid(const uint8_t *s, size_t len);

#endif

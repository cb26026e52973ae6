/* permessage-deflate (RFC 7692) negotiation: the client's offers in a
 * Sec-WebSocket-Extensions value are read in order and the first one the
 * server can honour is accepted; the response header value is written here
 * too. Pure: nothing here touches zlib, sockets or the clock, so the unit
 * tests and a fuzzer call exactly what the server runs.
 *
 * The server always answers with server_no_context_takeover and
 * client_no_context_takeover (RFC 7692 7.1.1 lets a server add both): no
 * zlib state survives between messages, so an idle connection holds none,
 * and one compressed broadcast frame is valid for every recipient. */
#ifndef MR_PMD_H
#define MR_PMD_H

#include <stddef.h>

/* The window sizes zlib can honour for raw deflate: a window of 8 bits is
 * silently widened to 9 by zlib, which a client that asked for 8 could not
 * inflate, so such an offer is declined. */
enum { MR_PMD_MIN_BITS = 9, MR_PMD_MAX_BITS = 15 };

/* What was agreed for one connection. */
typedef struct {
  /* The window the server deflates with: the configured one, or less when
   * the client asked for less (server_max_window_bits). */
  unsigned server_bits;
  /* The offer named server_max_window_bits, so the response must name it
   * too (RFC 7692 7.1.2.1: and only then). */
  int answer_server_bits;
} mr_pmd_agreement;

/* Reads value (len bytes: one Sec-WebSocket-Extensions header line; a
 * request with several lines is read one line at a time, in order, since an
 * offer never spans lines). window_bits is the most the server will deflate
 * with (9..15).
 *
 * Returns 1 and fills *out for the first permessage-deflate offer that can
 * be honoured; 0 when there is none. Offers of other extensions are
 * skipped. Each permessage-deflate offer declined (an unknown or repeated
 * parameter, a value out of range, server_max_window_bits=8) adds one to
 * *declined, and *why (when not NULL) is set to a static string naming the
 * reason of the last one. A value that breaks the header's grammar declines
 * every offer from that point on, counted as one. */
int mr_pmd_negotiate(const char *value, size_t len, unsigned window_bits,
                     mr_pmd_agreement *out, unsigned *declined,
                     const char **why);

/* Writes the response's header line, "Sec-WebSocket-Extensions: ...\r\n",
 * NUL-terminated, into buf (cap bytes). Returns its length, or -1 when it
 * does not fit. */
int mr_pmd_response(const mr_pmd_agreement *a, char *buf, size_t cap);

#endif

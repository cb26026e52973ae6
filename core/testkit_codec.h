/* The client-side frame codec of the busted kit's Lua C module
 * (`moonroom.sim`, testkit.c): frames as a client sends and reads them. */
#ifndef MR_TESTKIT_CODEC_H
#define MR_TESTKIT_CODEC_H

#include <lauxlib.h>

/* encode, decode and accept_key, registered into the module table. */
extern const luaL_Reg mr_testkit_codec_funcs[];

#endif

/* embed.h — agt's Lua library inside another program: the one entry that libagt.so adds to the
 * engine's C API, for hosts reached through a plain C FFI (Python's ctypes, and any other).
 *
 * The rules and attacks are Lua files (lua/aggregators, lua/attacks) over the engine; a host in
 * another language runs those same files, through an embedded LuaJIT state, rather than a
 * second copy of their definitions, requirements and argument parsing. A state loads the Lua
 * module agt.foreign from a tree (the folder holding lua/ and bindings/) and answers requests:
 * a function name of that module and one JSON object, answered with one JSON object (see
 * lua/agt/foreign.lua for the requests). Memory is passed as addresses inside the request and
 * used in place (no copy).
 *
 * Not thread-safe: one thread at a time per state (the Python package holds a lock). The engine
 * symbols must be visible to the state's FFI (LuaJIT's ffi.C): load libagt.so with RTLD_GLOBAL. */
#ifndef AGT_EMBED_H
#define AGT_EMBED_H

#include "status.h"

typedef struct agt_lua agt_lua;

/* A new state over the tree at root (lua/agt/foreign.lua must be there). AGT_EINVAL with the
 * Lua message when the library does not load. *out is owned by the caller: agt_lua_close. */
agt_status agt_lua_open(const char *root, agt_lua **out);
void agt_lua_close(agt_lua *L);   /* NULL is fine */

/* Calls agt.foreign[fn](request) and sets *reply to its JSON answer, a string owned by L and
 * valid until the next call on L. Errors the request explains (bad spec, n and f, arguments)
 * are part of the answer ({"error": ..., "kind": ...}); AGT_EIO with the Lua traceback is a
 * failure of the library itself. */
agt_status agt_lua_call(agt_lua *L, const char *fn, const char *request, const char **reply);

#endif

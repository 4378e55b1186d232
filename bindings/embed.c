/* embed.c — an embedded LuaJIT state running agt's Lua library for a host in another language
 * (embed.h). Like main.c, and unlike the engine, this file uses the Lua C API; it is linked
 * into libagt.so only, never into ./agt or the C tests.
 *
 * The state's package.path is the tree's lua/ and bindings/ (as ./agt sets it), its cpath adds
 * the tree's clib/ (the GPU bundle carries lua-cjson there) and the system's Lua 5.1 modules,
 * and agt.host.config names the tree, so the modules
 * that ask where they live get the same answer as under ./agt. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "embed.h"

struct agt_lua {
  lua_State *L;
  char *reply;   /* the last answer, owned here */
};

static int traceback(lua_State *L) {
  if (!lua_isstring(L, 1)) return 1;
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

/* Runs the function under the top narg values with the traceback handler; 0 or a Lua code. */
static int pcall_tb(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int s = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return s;
}

static int setup(lua_State *L) {
  const char *root = lua_tostring(L, 1);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/bindings/?.lua;%s", root, root, root,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/clib/?.so;%s;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so", root,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 1);
  lua_getfield(L, -1, "loaded");
  lua_newtable(L);
  lua_pushstring(L, root);
  lua_setfield(L, -2, "root");
  lua_pushstring(L, "libagt");
  lua_setfield(L, -2, "exe");
  lua_setfield(L, -2, "agt.host.config");
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushstring(L, "agt.foreign");
  lua_call(L, 1, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "agt.foreign");
  return 0;
}

agt_status agt_lua_open(const char *root, agt_lua **out) {
  if (!root || !out) return AGT_FAIL(AGT_EINVAL, "agt_lua_open: root and out are required");
  *out = NULL;
  agt_lua *e = calloc(1, sizeof *e);
  if (!e) return AGT_FAIL(AGT_ENOMEM, "agt_lua_open: out of memory");
  e->L = luaL_newstate();
  if (!e->L) {
    free(e);
    return AGT_FAIL(AGT_ENOMEM, "agt_lua_open: LuaJIT could not create a state");
  }
  lua_pushcfunction(e->L, setup);
  lua_pushstring(e->L, root);
  if (pcall_tb(e->L, 1, 0) != 0) {
    agt_status s = AGT_FAIL(AGT_EINVAL, "agt's Lua library did not load from %s: %s", root,
                            lua_tostring(e->L, -1));
    agt_lua_close(e);
    return s;
  }
  *out = e;
  return AGT_OK;
}

void agt_lua_close(agt_lua *e) {
  if (!e) return;
  if (e->L) lua_close(e->L);
  free(e->reply);
  free(e);
}

agt_status agt_lua_call(agt_lua *e, const char *fn, const char *request, const char **reply) {
  if (!e || !fn || !request || !reply) return AGT_FAIL(AGT_EINVAL, "agt_lua_call: null argument");
  *reply = NULL;
  lua_State *L = e->L;
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, "agt.foreign");
  lua_getfield(L, -1, "call");
  lua_pushstring(L, fn);
  lua_pushstring(L, request);
  agt_status s = AGT_OK;
  if (pcall_tb(L, 2, 1) != 0) {
    s = AGT_FAIL(AGT_EIO, "agt.foreign.%s failed: %s", fn, lua_tostring(L, -1));
  } else {
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    char *copy = text ? malloc(len + 1) : NULL;
    if (!copy) {
      s = text ? AGT_FAIL(AGT_ENOMEM, "agt_lua_call: out of memory")
               : AGT_FAIL(AGT_EIO, "agt.foreign.%s answered no string", fn);
    } else {
      memcpy(copy, text, len + 1);
      free(e->reply);
      e->reply = copy;
      *reply = copy;
    }
  }
  lua_settop(L, top);
  return s;
}

/* fuzz.c — a libFuzzer driver for agt's Lua readers and validators (make fuzz).
 *
 * Each input is passed as a Lua string to one function of tools/fuzz/targets.lua, chosen by
 * AGT_FUZZ_TARGET (checkpoint, tfevents, plugin). The function returns normally for any input
 * (refusing bad input is its job); a Lua error escaping it is a bug and aborts, so libFuzzer
 * keeps the input as a crash. The engine is linked whole (-Wl,-E) so the modules reach it
 * through the FFI as they do in ./agt. AGT_ROOT: the tree holding lua/ (default: the cwd).
 *
 * libFuzzer sees only C coverage, and the code under test is Lua: a line hook (the JIT off, so
 * every line is interpreted) counts each (chunk, line) pair into libFuzzer's extra counters,
 * so inputs that reach new Lua lines are kept and mutated further. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static lua_State *L;

#define NCOUNTERS 65536
__attribute__((section("__libfuzzer_extra_counters"))) static unsigned char counters[NCOUNTERS];

static void on_line(lua_State *L1, lua_Debug *ar) {
  if (!lua_getinfo(L1, "S", ar)) return;
  size_t h = (size_t)(uintptr_t)ar->source * 2654435761u + (size_t)ar->currentline * 40503u;
  unsigned char *c = &counters[(h ^ (h >> 16)) % NCOUNTERS];
  if (*c < 255) (*c)++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *root = getenv("AGT_ROOT") ? getenv("AGT_ROOT") : ".";
  const char *target = getenv("AGT_FUZZ_TARGET") ? getenv("AGT_FUZZ_TARGET") : "checkpoint";
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/bindings/?.lua;%s/tools/fuzz/?.lua", root,
                  root, root, root);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "loaded");
  lua_newtable(L);
  lua_pushstring(L, root);
  lua_setfield(L, -2, "root");
  lua_setfield(L, -2, "agt.host.config");
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushstring(L, "targets");
  if (lua_pcall(L, 1, 1, 0) != 0) {
    fprintf(stderr, "fuzz: cannot load tools/fuzz/targets.lua: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  lua_getfield(L, -1, target);
  if (!lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz: no target '%s' (AGT_FUZZ_TARGET: checkpoint, tfevents, plugin)\n", target);
    exit(2);
  }
  lua_setglobal(L, "agt_fuzz_target");
  lua_pop(L, 1);
  luaL_dostring(L, "jit.off()");
  lua_sethook(L, on_line, LUA_MASKLINE, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  lua_getglobal(L, "agt_fuzz_target");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    fprintf(stderr, "fuzz: the target raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}

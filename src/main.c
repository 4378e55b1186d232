/* main.c — the agt host: runs scripts, subcommands and the interactive REPL on LuaJIT.
 *
 * Modelled on luajit.c: a protected main (lua_cpcall), a traceback handler, Ctrl-C turned
 * into a Lua error through a one-shot hook, multi-line input detected from '<eof>' syntax
 * errors. Unlike the engine (src/ other than this file), this file uses the Lua C API.
 *
 * SIGINT and SIGTERM (what schedulers and `docker stop` send) are handled alike: each always
 * sets the engine's interrupt flag (long C kernels poll it). By default it also
 * raises "interrupted!" in the running Lua code; agt_host_sigint_raises(0) turns that off, for
 * loops such as the runner's that poll the flag and stop cleanly themselves. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>

#include <sys/stat.h>

#include "gpu.h"
#include "mem.h"
#include "status.h"

#define PROMPT1 "agt> "
#define PROMPT2 "  >> "

static lua_State *globalL;
static const char *progname = "agt";
static volatile sig_atomic_t sigint_raises = 1;
static char root[PATH_MAX + 64];

void agt_host_sigint_raises(int on);
void agt_host_sigint_raises(int on) { sigint_raises = on ? 1 : 0; }

static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void laction(int sig) {
  signal(sig, SIG_DFL); /* a second Ctrl-C ends the process */
  agt_interrupt_set(1);
  if (sigint_raises && globalL)
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void term_after_run(int sig) { signal(sig, SIG_DFL); }

/* Under AGT_DEBUG engine buffers end at a guard page (mem.c): a segmentation fault is then
 * most likely C code running past a buffer. Says so (with async-signal-safe writes only),
 * then the default action ends the process as before (SA_RESETHAND, the access repeats). */
static void say(const char *s) {
  ssize_t r = write(2, s, strlen(s));
  (void)r;
}

static void guard_fault(int sig, siginfo_t *si, void *ctx) {
  (void)sig;
  (void)ctx;
  char hex[2 + 16 + 1] = "0x";
  uintptr_t a = (uintptr_t)si->si_addr;
  for (int i = 0; i < 16; i++) hex[2 + i] = "0123456789abcdef"[(a >> (60 - 4 * i)) & 15];
  hex[18] = 0;
  say("agt: segmentation fault at address ");
  say(hex);
  say(" (AGT_DEBUG): engine buffers end at an inaccessible page, so this is most likely a C "
      "function reading or writing past a buffer: check the sizes passed with a pointer (the n "
      "and d given to self:kernel or an agt_* function beside t:pointer() or t.raw)\n");
}

static void install_guard_fault(void) {
  if (!agt_mem_guarded()) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = guard_fault;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
}

static void print_error(const char *msg) {
  fflush(stdout);
  fprintf(stderr, "%s: %s\n", progname, msg);
  fflush(stderr);
}

static int report(lua_State *L, int status) {
  if (status && !lua_isnil(L, -1)) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) msg = "(error object is not a string)";
    print_error(msg);
    lua_pop(L, 1);
  }
  return status;
}

static int traceback(lua_State *L) {
  if (!lua_isstring(L, 1)) {
    if (lua_isnoneornil(L, 1) || !luaL_callmeta(L, 1, "__tostring") || !lua_isstring(L, -1))
      return 1; /* keep a non-string error object as it is */
    lua_remove(L, 1);
  }
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  agt_interrupt_set(0);
  signal(SIGINT, laction);
  signal(SIGTERM, laction);
  int status = lua_pcall(L, narg, nres, base);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  lua_remove(L, base);
  if (status != 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return status;
}

/* Finds the tree holding lua/ and bindings/: beside the binary, or PREFIX/share/agt. */
static void find_root(const char *argv0) {
  char exe[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (k <= 0) {
    if (!realpath(argv0, exe)) snprintf(exe, sizeof exe, "%s", argv0);
  } else {
    exe[k] = '\0';
  }
  char *slash = strrchr(exe, '/');
  if (slash) *slash = '\0'; else snprintf(exe, sizeof exe, ".");
  char probe[PATH_MAX + 64];
  snprintf(probe, sizeof probe, "%s/lua/agt/init.lua", exe);
  if (access(probe, R_OK) == 0) {
    snprintf(root, sizeof root, "%s", exe);
    return;
  }
  snprintf(probe, sizeof probe, "%s/../share/agt/lua/agt/init.lua", exe);
  if (access(probe, R_OK) == 0) {
    snprintf(probe, sizeof probe, "%s/../share/agt", exe);
    if (!realpath(probe, root)) snprintf(root, sizeof root, "%s", probe);
    return;
  }
  snprintf(root, sizeof root, "%s", exe);
}

static int setup_paths(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/bindings/?.lua;%s", root, root, root,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so", lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 1);
  /* package.loaded["agt.host"] is filled by bindings/agt/host.lua; the root goes there. */
  lua_getfield(L, -1, "loaded");
  lua_newtable(L);
  lua_pushstring(L, root);
  lua_setfield(L, -2, "root");
  lua_pushstring(L, progname);
  lua_setfield(L, -2, "exe");
  lua_setfield(L, -2, "agt.host.config");
  lua_pop(L, 2);
  return 0;
}

/* Loads the library as the global `agt`, so scripts and the REPL reach agt.tensor & co. */
static int load_agt(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushstring(L, "agt");
  int s = docall(L, 1, 1);
  if (s) return report(L, s);
  lua_setglobal(L, "agt");
  return 0;
}

static void create_arg(lua_State *L, char **argv, int argc, int script) {
  lua_createtable(L, argc - script - 1, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int run_script(lua_State *L, const char *file, char **argv, int argc, int script) {
  create_arg(L, argv, argc, script);
  int status = luaL_loadfile(L, strcmp(file, "-") == 0 ? NULL : file);
  if (status == 0) {
    int nargs = argc - script - 1;
    for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
    status = docall(L, nargs, 0);
  }
  return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name) {
  int status = luaL_loadbuffer(L, s, strlen(s), name);
  if (status == 0) status = docall(L, 0, 0);
  return report(L, status);
}

static int dolibrary(lua_State *L, const char *name) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  int s = docall(L, 1, 1);
  if (s) return report(L, s);
  lua_setglobal(L, name);
  return 0;
}

/* A subcommand that fails because Ctrl-C or SIGTERM came while it was loading or before it
 * polls the flag itself: a stop (130) with one line, not a failure (1) with a traceback. */
static int failed(lua_State *L, int status) {
  if (agt_interrupted()) {
    lua_pop(L, 1);
    print_error("interrupted");
    return 130;
  }
  report(L, status);
  return 1;
}

/* Runs lua/agt/cli/NAME.lua through the Lua dispatcher; returns the process exit code. */
static int run_subcommand(lua_State *L, char **argv, int argc, int first) {
  create_arg(L, argv, argc, first);
  lua_getglobal(L, "require");
  lua_pushstring(L, "agt.cli");
  int s = docall(L, 1, 1);
  if (s) return failed(L, s);
  lua_getfield(L, -1, "main");
  lua_remove(L, -2);
  lua_createtable(L, argc - first, 0);
  for (int i = first; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first + 1);
  }
  s = docall(L, 1, 1);
  if (s) return failed(L, s);
  int code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return code;
}

/* ---- REPL ------------------------------------------------------------------------------ */

static char history_file[PATH_MAX];
static volatile sig_atomic_t prompt_interrupted;

static void prompt_sigint(int sig) {
  (void)sig;
  prompt_interrupted = 1;
}

/* Reads one line; returns NULL on end of input. An interrupt at the prompt gives "". */
static char *read_line(const char *prompt) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = prompt_sigint; /* no SA_RESTART: the read returns */
  sigaction(SIGINT, &sa, &old);
  prompt_interrupted = 0;
  char *line = readline(prompt);
  sigaction(SIGINT, &old, NULL);
  if (!line && prompt_interrupted) {
    fputc('\n', stdout);
    return strdup("");
  }
  return line;
}

static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    const char *tp = msg + lmsg - (sizeof("'<eof>'") - 1);
    if (lmsg >= sizeof("'<eof>'") - 1 && strstr(msg, "'<eof>'") == tp) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* Calls agt.repl's function `fn` with `nargs` arguments on the stack; leaves `nres` results
 * (nil on any failure: the REPL works without its Lua side). */
static void repl_call(lua_State *L, const char *fn, int nargs, int nres) {
  lua_getglobal(L, "require");
  lua_pushstring(L, "agt.repl");
  if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
    lua_pop(L, 1 + nargs);
    for (int i = 0; i < nres; i++) lua_pushnil(L);
    return;
  }
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs);
  if (lua_pcall(L, nargs, nres, 0) != 0) {
    lua_pop(L, 1);
    for (int i = 0; i < nres; i++) lua_pushnil(L);
  }
}

/* Tab completion: agt.repl.complete(word) gives the candidates, handed out one by one. */
static lua_State *complete_L;
static char *complete_next(const char *text, int state) {
  static int i, n;
  lua_State *L = complete_L;
  if (state == 0) {
    lua_pushstring(L, text);
    repl_call(L, "complete", 1, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "agt.repl.completions");
    i = 0;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "agt.repl.completions");
  n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  char *out = NULL;
  if (i < n) {
    lua_rawgeti(L, -1, ++i);
    const char *c = lua_tostring(L, -1);
    if (c) out = strdup(c);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return out;
}
static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* no file names */
  rl_completion_append_character = '\0'; /* "agt.tensor" may go on with ".new" or ":" */
  return rl_completion_matches(text, complete_next);
}

/* Pushes a compiled chunk (an expression first, as "return <line>"), or returns -1 at EOF (or
 * on `exit`). agt.repl.rewrite turns `=expr`, `?x`, `exit` and `quit` into Lua first. */
static int load_chunk(lua_State *L) {
  char *line = read_line(PROMPT1);
  if (!line) return -1;
  if (line[0] == '\0' && prompt_interrupted) { free(line); lua_pushnil(L); return LUA_ERRRUN; }
  lua_pushstring(L, line);
  lua_pushvalue(L, -1);
  repl_call(L, "rewrite", 1, 2); /* line, rewritten-or-nil, "exit"-or-nil */
  int rewritten = 0;
  if (lua_isstring(L, -2)) {
    rewritten = strcmp(lua_tostring(L, -2), line) != 0;
    lua_pop(L, 1);
    lua_replace(L, -2);
  } else if (lua_isstring(L, -1)) {
    free(line);
    lua_pop(L, 3);
    return -1;
  } else {
    lua_pop(L, 2);
  }
  if (rewritten) { /* the history keeps what was typed */
    add_history(line);
    if (history_file[0]) write_history(history_file);
  }
  free(line);
  /* expression? */
  lua_pushfstring(L, "return %s", lua_tostring(L, -1));
  int status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_strlen(L, -1), "=stdin");
  if (status == 0) {
    lua_remove(L, -2); /* "return ..." */
    lua_insert(L, -2); /* chunk below the source text */
  } else {
    lua_pop(L, 2);
    for (;;) {
      status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_strlen(L, -1), "=stdin");
      if (!incomplete(L, status)) break;
      char *more = read_line(PROMPT2);
      if (!more || (more[0] == '\0' && prompt_interrupted)) { /* abandon the chunk */
        free(more);
        lua_pop(L, 1);
        lua_pushnil(L);
        return LUA_ERRRUN;
      }
      lua_pushliteral(L, "\n");
      lua_pushstring(L, more);
      free(more);
      lua_concat(L, 3);
    }
    lua_insert(L, -2); /* the chunk or the error message below the source text */
  }
  /* stack: chunk-or-error, source */
  const char *src = lua_tostring(L, -1);
  if (src && *src && !rewritten) {
    add_history(src);
    if (history_file[0]) write_history(history_file);
  }
  lua_pop(L, 1);
  return status;
}

static void print_results(lua_State *L, int base) {
  int n = lua_gettop(L) - base;
  if (n <= 0) return;
  lua_getglobal(L, "require");
  lua_pushstring(L, "agt.repl");
  if (lua_pcall(L, 1, 1, 0) == 0) {
    lua_getfield(L, -1, "print");
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    if (docall(L, n, 0) != 0) report(L, 1);
  } else {
    lua_pop(L, 1);
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    if (lua_pcall(L, n, 0, 0) != 0) report(L, 1);
  }
}

static void repl(lua_State *L) {
  const char *home = getenv("HOME");
  if (home && *home) {
    snprintf(history_file, sizeof history_file, "%s/.agt_history", home);
    read_history(history_file);
  }
  stifle_history(1000);
  rl_readline_name = "agt";
  complete_L = L;
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
  repl_call(L, "install", 0, 0);
  /* Compiled traces never look at hooks, so a Lua loop compiled by the JIT could not be
   * interrupted. The REPL therefore interprets Lua (engine kernels run at full speed either
   * way); jit.on() trades that for speed. Scripts run with the JIT on. */
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  printf("agt %s (%s) — Ctrl-D exits, Ctrl-C interrupts\n", agt_version(), agt_build_features());
  for (;;) {
    int base = lua_gettop(L);
    int status = load_chunk(L);
    if (status == -1) break;
    if (status == 0) {
      status = docall(L, 0, LUA_MULTRET);
      if (status == 0) print_results(L, base);
    }
    if (status != 0) report(L, status);
    lua_settop(L, base);
  }
  fputc('\n', stdout);
  fflush(stdout);
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(void) {
  printf("usage: %s [options] [script [args...]]\n"
         "       %s SUBCOMMAND [args...]     (agt help lists them)\n"
         "Options:\n"
         "  -e chunk   run the Lua string chunk\n"
         "  -l name    require library 'name' into the global of that name\n"
         "  -i         enter the REPL after running the script or -e chunks\n"
         "  -v         show the version and build features\n"
         "  -h         show this help\n"
         "  --         stop handling options\n"
         "  -          run stdin as a script\n"
         "With no script, agt opens the REPL on a terminal, else runs stdin.\n",
         progname, progname);
}

struct smain {
  int argc;
  char **argv;
  int status;
};

static int pmain(lua_State *L) {
  struct smain *s = lua_touserdata(L, 1);
  char **argv = s->argv;
  int argc = s->argc;
  globalL = L;
  lua_gc(L, LUA_GCSTOP, 0);
  luaL_openlibs(L);
  lua_gc(L, LUA_GCRESTART, -1);
  setup_paths(L);
  if (load_agt(L)) { s->status = 1; return 0; }

  int interactive = 0, ran = 0, i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) break;
    if (strcmp(a, "--") == 0) { i++; break; }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(); s->status = 0; return 0; }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      printf("agt %s — %s, %s\n", agt_version(), LUAJIT_VERSION, agt_build_features());
      /* MPI is a library of its own beside agt, loaded for --MPI only (bindings/agt/mpi.lua) */
      char mpi[sizeof root + 32];
      snprintf(mpi, sizeof mpi, "%s/libagt_mpi.so", root);
      printf("MPI: %s\n", access(mpi, R_OK) == 0 ? "yes (libagt_mpi.so; agt run --MPI under mpirun)"
                                                   : "no (--MPI needs agt built where OpenMPI is installed)");
      char dev[256];
      if (agt_gpu_available() && agt_gpu_describe(dev, sizeof dev) == AGT_OK)
        printf("GPU: %s\n", dev);
#ifdef AGT_HAVE_CUDA
      else
        printf("GPU: none seen (CUDA kernels built; the CPU kernels are used)\n");
#endif
      ran = 1;
      continue;
    }
    if (strcmp(a, "-i") == 0) { interactive = 1; continue; }
    if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: '%s' needs an argument\n", progname, a);
        usage();
        s->status = 1;
        return 0;
      }
      create_arg(L, argv, argc, 0);
      int st = a[1] == 'e' ? dostring(L, argv[i + 1], "=(command line)") : dolibrary(L, argv[i + 1]);
      if (st) { s->status = 1; return 0; }
      ran = 1;
      i++;
      continue;
    }
    fprintf(stderr, "%s: unknown option '%s'\n", progname, a);
    usage();
    s->status = 1;
    return 0;
  }
  if (i < argc) {
    const char *target = argv[i];
    struct stat st;
    /* a regular file, or what looks like a path, is a script; a bare word (even the name of
     * a folder here, such as bench/) is a subcommand */
    int is_file = strcmp(target, "-") == 0 || (stat(target, &st) == 0 && S_ISREG(st.st_mode)) ||
                  strchr(target, '/') != NULL || strstr(target, ".lua") != NULL;
    if (!is_file) {
      s->status = run_subcommand(L, argv, argc, i);
      return 0;
    }
    if (run_script(L, target, argv, argc, i)) { s->status = 1; return 0; }
    ran = 1;
  }
  if (interactive || !ran) {
    if (isatty(0)) {
      create_arg(L, argv, argc, 0);
      repl(L);
    } else if (!ran) {
      if (run_script(L, "-", argv, argc, 0)) { s->status = 1; return 0; }
    }
  }
  s->status = 0;
  return 0;
}

int main(int argc, char **argv) {
  if (argv[0] && argv[0][0]) progname = "agt";
  find_root(argv[0]);
  install_guard_fault();
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", progname);
    return 1;
  }
  struct smain s = {argc, argv, 0};
  int status = lua_cpcall(L, pmain, &s);
  /* The work is done: a SIGTERM now (a scheduler stopping a run that just ended) must not turn
   * the run's exit status into a death by signal while the state is closed (finalizers free
   * tensors, close sockets and the device). The first one is absorbed; a second ends at once. */
  signal(SIGTERM, term_after_run);
  report(L, status);
  lua_close(L);
  return status ? 1 : s.status; /* a script's or subcommand's own exit code */
}

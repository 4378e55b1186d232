-- agt.proc — child processes with their output read line by line, for commands that run and
-- watch several at once (agt deploy).
--
--   local P = require("agt.proc")
--   local p = P.spawn({ "ssh", "host", "cmd" }, { stdin = "pipe" | "null", group = true })
--   p.pid                         the child's pid (its own process group when group = true, so
--                                 the terminal's Ctrl-C reaches only the caller, which decides)
--   p:write(s)   p:close_stdin()  what the child reads (stdin = "pipe"); closing it is an EOF
--   P.pump(procs, timeout_ms, on_line)   waits up to timeout_ms for output of any of procs,
--                                 calls on_line(p, "out" | "err", line) per complete line (a last
--                                 line without "\n" when the stream ends) and reaps the exited;
--                                 returns early when a signal arrives (the caller polls its flag)
--   p:done() -> true once the child has exited and both its streams are drained; p.code is
--                                 then its exit status (128 + N when killed by signal N)
--   p:signal(sig)                 P.SIGINT, P.SIGTERM, P.SIGKILL (to its group when group = true)
-- The descriptors the parent keeps are close-on-exec, so no other child holds a pipe open (an
-- EOF on a child's stdin is seen as soon as the caller closes its end).
-- Linux/glibc: posix_spawnp with opaque attribute blocks sized above glibc's 336 and 80 bytes.
local ffi = require("ffi")
local C = ffi.C

pcall(ffi.cdef, [[
typedef struct { uint64_t opaque[64]; } agt_spawnattr_t;
typedef struct { uint64_t opaque[32]; } agt_spawn_fa_t;
typedef struct { uint64_t bits[16]; } agt_sigset_t;
struct agt_pollfd { int fd; short events; short revents; };
int pipe2(int fds[2], int flags);
int fcntl(int fd, int cmd, ...);
int close(int fd);
long read(int fd, void *buf, size_t n);
long write(int fd, const void *buf, size_t n);
int poll(struct agt_pollfd *fds, unsigned long nfds, int timeout);
int waitpid(int pid, int *status, int options);
int kill(int pid, int sig);
int posix_spawnp(int *pid, const char *file, const agt_spawn_fa_t *fa, const agt_spawnattr_t *attr,
                 char *const argv[], char *const envp[]);
int posix_spawn_file_actions_init(agt_spawn_fa_t *fa);
int posix_spawn_file_actions_destroy(agt_spawn_fa_t *fa);
int posix_spawn_file_actions_adddup2(agt_spawn_fa_t *fa, int fd, int newfd);
int posix_spawn_file_actions_addopen(agt_spawn_fa_t *fa, int fd, const char *path, int oflag, int mode);
int posix_spawnattr_init(agt_spawnattr_t *attr);
int posix_spawnattr_destroy(agt_spawnattr_t *attr);
int posix_spawnattr_setflags(agt_spawnattr_t *attr, short flags);
int posix_spawnattr_setpgroup(agt_spawnattr_t *attr, int pgroup);
int posix_spawnattr_setsigdefault(agt_spawnattr_t *attr, const agt_sigset_t *set);
int posix_spawnattr_setsigmask(agt_spawnattr_t *attr, const agt_sigset_t *set);
int sigemptyset(agt_sigset_t *set);
int sigaddset(agt_sigset_t *set, int sig);
char *strerror(int errnum);
]])
pcall(ffi.cdef, "extern char **environ;")

local M = { SIGHUP = 1, SIGINT = 2, SIGKILL = 9, SIGPIPE = 13, SIGTERM = 15 }

local O_RDONLY, O_NONBLOCK, O_CLOEXEC = 0, 0x800, 0x80000
local POLLIN, POLLHUP, POLLERR = 1, 16, 8
local WNOHANG, EINTR, EAGAIN = 1, 4, 11
local F_GETFL, F_SETFL = 3, 4
local SETPGROUP, SETSIGDEF, SETSIGMASK = 0x02, 0x04, 0x08

local Proc = {}
Proc.__index = Proc

local function cstrings(list)
  local arr = ffi.new("char *[?]", #list + 1)
  local keep = {}
  for i, s in ipairs(list) do
    keep[i] = ffi.new("char[?]", #s + 1, s)
    arr[i - 1] = keep[i]
  end
  arr[#list] = nil
  return arr, keep
end

-- A pipe: read end, write end, both close-on-exec; the read end non-blocking when asked (the
-- write end, the child's stdout, stays blocking).
local function pipe(nonblock_read)
  local fds = ffi.new("int[2]")
  if C.pipe2(fds, O_CLOEXEC) ~= 0 then error("proc: pipe2: " .. ffi.string(C.strerror(ffi.errno())), 0) end
  if nonblock_read then
    local fl = C.fcntl(fds[0], F_GETFL)
    C.fcntl(fds[0], F_SETFL, ffi.new("int", bit.bor(fl, O_NONBLOCK)))
  end
  return fds[0], fds[1]
end

-- Starts argv (argv[1] looked up on PATH). opts.stdin: "pipe" (kept for p:write/close_stdin)
-- or "null" (the default); opts.group: the child leads its own process group.
function M.spawn(argv, opts)
  opts = opts or {}
  assert(type(argv) == "table" and #argv >= 1, "proc.spawn: expects an argv list")
  local out_r, out_w = pipe(true)
  local err_r, err_w = pipe(true)
  local in_r, in_w
  if opts.stdin == "pipe" then in_r, in_w = pipe(false) end
  local fa, attr = ffi.new("agt_spawn_fa_t"), ffi.new("agt_spawnattr_t")
  C.posix_spawn_file_actions_init(fa)
  if in_r then C.posix_spawn_file_actions_adddup2(fa, in_r, 0)
  else C.posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0) end
  C.posix_spawn_file_actions_adddup2(fa, out_w, 1)
  C.posix_spawn_file_actions_adddup2(fa, err_w, 2)
  C.posix_spawnattr_init(attr)
  -- The child starts with the default dispositions and no blocked signal, whatever this
  -- process set up (agt's handlers, an ignored SIGPIPE).
  local def, none = ffi.new("agt_sigset_t"), ffi.new("agt_sigset_t")
  C.sigemptyset(def)
  C.sigemptyset(none)
  for _, s in ipairs({ M.SIGHUP, M.SIGINT, M.SIGPIPE, M.SIGTERM, 3 --[[SIGQUIT]] }) do C.sigaddset(def, s) end
  C.posix_spawnattr_setsigdefault(attr, def)
  C.posix_spawnattr_setsigmask(attr, none)
  local flags = SETSIGDEF + SETSIGMASK
  if opts.group then
    flags = flags + SETPGROUP
    C.posix_spawnattr_setpgroup(attr, 0)
  end
  C.posix_spawnattr_setflags(attr, flags)
  local cargv, keep = cstrings(argv)
  local pid = ffi.new("int[1]")
  local rc = C.posix_spawnp(pid, cargv[0], fa, attr, cargv, C.environ)
  C.posix_spawn_file_actions_destroy(fa)
  C.posix_spawnattr_destroy(attr)
  local _ = keep
  C.close(out_w)
  C.close(err_w)
  if in_r then C.close(in_r) end
  if rc ~= 0 then
    C.close(out_r); C.close(err_r)
    if in_w then C.close(in_w) end
    return nil, string.format("cannot start '%s': %s", argv[1], ffi.string(C.strerror(rc)))
  end
  return setmetatable({ pid = pid[0], group = opts.group and true or false, argv = argv,
                        fds = { out = out_r, err = err_r }, bufs = { out = "", err = "" },
                        stdin = in_w }, Proc)
end

function Proc:write(s)
  if not self.stdin then return false end
  local off = 0
  while off < #s do
    local k = tonumber(C.write(self.stdin, ffi.cast("const char *", s) + off, #s - off))
    if k <= 0 then
      if ffi.errno() ~= EINTR then return false end
    else
      off = off + k
    end
  end
  return true
end

function Proc:close_stdin()
  if self.stdin then
    C.close(self.stdin)
    self.stdin = nil
  end
end

function Proc:signal(sig)
  if self.code then return end
  C.kill(self.group and -self.pid or self.pid, sig)
end

function Proc:running() return self.code == nil end

function Proc:done() return self.code ~= nil and not self.fds.out and not self.fds.err end

local function decode(status)
  local sig = bit.band(status, 0x7f)
  if sig == 0 then return bit.band(bit.rshift(status, 8), 0xff) end
  return 128 + sig
end

function Proc:reap(block)
  if self.code then return self.code end
  local st = ffi.new("int[1]")
  local r = C.waitpid(self.pid, st, block and 0 or WNOHANG)
  if r == self.pid then self.code = decode(st[0]) end
  return self.code
end

local chunk = ffi.new("char[65536]")

-- Reads what is there on one stream; false at its end.
local function drain(p, which, on_line)
  local fd = p.fds[which]
  while true do
    local k = tonumber(C.read(fd, chunk, 65536))
    if k > 0 then
      local buf = p.bufs[which] .. ffi.string(chunk, k)
      local start = 1
      while true do
        local nl = buf:find("\n", start, true)
        if not nl then break end
        on_line(p, which, buf:sub(start, nl - 1))
        start = nl + 1
      end
      p.bufs[which] = buf:sub(start)
    elseif k == 0 or (k < 0 and ffi.errno() ~= EAGAIN and ffi.errno() ~= EINTR) then
      if p.bufs[which] ~= "" then on_line(p, which, p.bufs[which]) end
      p.bufs[which] = ""
      C.close(fd)
      p.fds[which] = nil
      return false
    else
      return true -- EAGAIN: nothing more now
    end
  end
end

function M.pump(procs, timeout_ms, on_line)
  local pfds, owners = {}, {}
  for _, p in ipairs(procs) do
    for _, which in ipairs({ "out", "err" }) do
      if p.fds[which] then
        pfds[#pfds + 1] = p.fds[which]
        owners[#owners + 1] = { p, which }
      end
    end
  end
  if #pfds > 0 then
    local arr = ffi.new("struct agt_pollfd[?]", #pfds)
    for i, fd in ipairs(pfds) do
      arr[i - 1].fd = fd
      arr[i - 1].events = POLLIN
    end
    local r = C.poll(arr, #pfds, timeout_ms)
    if r > 0 then
      for i = 1, #pfds do
        if bit.band(arr[i - 1].revents, POLLIN + POLLHUP + POLLERR) ~= 0 then
          drain(owners[i][1], owners[i][2], on_line)
        end
      end
    end
  elseif timeout_ms > 0 then
    -- nothing to read: wait for exits
    C.poll(nil, 0, math.min(timeout_ms, 50))
  end
  for _, p in ipairs(procs) do
    if not p.code and p:reap(false) then
      -- exited: what is left in its pipes (a grandchild may still hold them: not waited for)
      for _, which in ipairs({ "out", "err" }) do
        if p.fds[which] then drain(p, which, on_line) end
      end
    end
  end
end

-- Closes the streams of an exited child that a grandchild still holds open.
function Proc:abandon_streams(on_line)
  for _, which in ipairs({ "out", "err" }) do
    local fd = self.fds[which]
    if fd then
      if self.bufs[which] ~= "" and on_line then on_line(self, which, self.bufs[which]) end
      self.bufs[which] = ""
      C.close(fd)
      self.fds[which] = nil
    end
  end
end

return M

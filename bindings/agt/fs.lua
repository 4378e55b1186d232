-- agt.fs — the file-system helpers of the Lua library, over src/fs.h (no libc structures
-- declared in Lua: C sees the platform's own).
--
--   fs.mkdir_p(path)        -> true | nil, message        (mkdir -p; an existing directory is fine)
--   fs.list(dir)            -> sorted names | nil, message ("." and ".." left out)
--   fs.kind(path)           -> "file" | "dir" | "other" | nil (nothing there), size in bytes
--   fs.exists(path)         -> boolean
--   fs.remove(path)         -> true | nil, message        (a file or an empty directory)
--   fs.rename(from, to)     -> true | nil, message        (atomic within one file system)
--   fs.open_regular(path)   -> fd, size, identity string | nil, message (only a regular file;
--                              never blocks on a FIFO; close the fd with ffi.C.close)
--   fs.lua_files(dir)       -> sorted names of the .lua files in dir, without ".lua" ({} if none)
-- Runtime failures return nil and the engine's message; misuse (a path that is not a string)
-- raises.
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C

local M = {}

local function path_arg(p, fn)
  if type(p) ~= "string" or p == "" then
    error(string.format("fs.%s: expects a non-empty path string, got %s", fn, tostring(p)), 3)
  end
  return p
end

-- The engine's message without its "fs.c:NN: " origin, which means nothing to a user.
local function failed()
  return nil, (F.errmsg():gsub("^[%w_]+%.c:%d+: ", ""))
end

function M.mkdir_p(path)
  if C.agt_fs_mkdir_p(path_arg(path, "mkdir_p")) ~= 0 then return failed() end
  return true
end

local names_p = ffi.typeof("char *[1]")
local i64_1 = ffi.typeof("int64_t[1]")

function M.list(dir)
  local names, count, bytes = names_p(), i64_1(), i64_1()
  if C.agt_fs_list(path_arg(dir, "list"), names, count, bytes) ~= 0 then return failed() end
  local out = {}
  if names[0] ~= nil then
    local buf = ffi.string(names[0], bytes[0])
    C.agt_fs_free(names[0])
    for name in buf:gmatch("([^%z]*)%z") do out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

local KINDS = { [C.AGT_FS_FILE] = "file", [C.AGT_FS_DIR] = "dir", [C.AGT_FS_OTHER] = "other" }

function M.kind(path)
  local size = i64_1()
  local k = KINDS[C.agt_fs_kind(path_arg(path, "kind"), size)]
  if not k then return nil end
  return k, tonumber(size[0])
end

local ident_4 = ffi.typeof("int64_t[4]")
local int_1 = ffi.typeof("int[1]")

function M.open_regular(path)
  local fd, size, ident = int_1(), i64_1(), ident_4()
  if C.agt_fs_open_regular(path_arg(path, "open_regular"), fd, size, ident) ~= 0 then return failed() end
  return fd[0], tonumber(size[0]), string.format("%d:%d:%d:%d", tonumber(ident[0]),
    tonumber(ident[1]), tonumber(ident[2]), tonumber(ident[3]))
end

function M.exists(path) return M.kind(path) ~= nil end

function M.remove(path)
  if C.agt_fs_remove(path_arg(path, "remove")) ~= 0 then return failed() end
  return true
end

function M.rename(from, to)
  if C.agt_fs_rename(path_arg(from, "rename"), path_arg(to, "rename")) ~= 0 then return failed() end
  return true
end

function M.lua_files(dir)
  local out = {}
  for _, name in ipairs(M.list(dir) or {}) do
    local stem = name:match("^(.+)%.lua$")
    if stem then out[#out + 1] = stem end
  end
  return out
end

return M

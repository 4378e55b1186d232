-- agt.preflight — what a run will need, checked before it starts, so that a run too large for
-- the machine is refused with the numbers instead of growing until the kernel kills it.
--
--   preflight.available() -> bytes, where    (MemAvailable, or less under a cgroup limit)
--   preflight.memory(items, flag [, hint, avail, where])  raises "--flag: the run needs about X
--                                            (a: .., b: ..) but Y are available (where)" when the
--                                            sum is over (avail, where: another memory's figure,
--                                            a GPU's; by default this machine's, as below)
-- items: a list of { what, bytes }. AGT_MEMORY_LIMIT (bytes) replaces what the machine says.
local M = {}

local function read_number(path, pattern)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(pattern or "^%s*(%d+)"))
end

-- Bytes this process may still take, and where that figure comes from.
function M.available()
  local forced = tonumber(os.getenv("AGT_MEMORY_LIMIT") or "")
  if forced then return forced, "AGT_MEMORY_LIMIT" end
  local best, where
  local kb = read_number("/proc/meminfo", "MemAvailable:%s*(%d+)")
  if kb then best, where = kb * 1024, "MemAvailable in /proc/meminfo" end
  -- cgroup v2, then v1: the limit less what the group already uses
  for _, c in ipairs({ { "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current" },
                       { "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes" } }) do
    local limit = read_number(c[1])
    if limit and limit < 2 ^ 60 then
      local left = limit - (read_number(c[2]) or 0)
      if not best or left < best then best, where = left, "the cgroup's limit " .. c[1] end
      break
    end
  end
  return best, where
end

local function human(b)
  if b >= 2 ^ 30 then return string.format("%.1f GiB", b / 2 ^ 30) end
  if b >= 2 ^ 20 then return string.format("%.1f MiB", b / 2 ^ 20) end
  return string.format("%d bytes", b)
end
M.human = human

-- Raises naming the flag, the total, its largest parts and what is available, when items need
-- more memory than there is.
function M.memory(items, flag, hint, avail, where)
  local total = 0
  for _, it in ipairs(items) do total = total + it[2] end
  if not avail then avail, where = M.available() end
  if not avail or total <= avail then return total, avail end
  table.sort(items, function(a, b) return a[2] > b[2] end)
  local parts = {}
  for i = 1, math.min(3, #items) do parts[i] = items[i][1] .. " " .. human(items[i][2]) end
  error(string.format("--%s: the run needs about %s (%s) but %s are available (%s)%s", flag,
                      human(total), table.concat(parts, ", "), human(avail), where,
                      hint and ("; " .. hint) or ""), 0)
end

return M

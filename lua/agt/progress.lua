-- agt.progress — what a training run shows while it works.
--
-- On a terminal: one live line, redrawn in place at most every `redraw` seconds, with the step,
-- steps/s (over the last few seconds), loss, the last evaluated accuracy and the ETA. Anything
-- else printed goes through `print_line`, which erases the live line first, so the two never
-- interleave. Not on a terminal (a log file, a pipe, CI): a plain line every `every` seconds.
-- Time comes from the caller (monotonic seconds), so the module is testable without waiting.
local ffi = require("ffi")
pcall(ffi.cdef, "int isatty(int fd);")

local M = {}
local P = {}
P.__index = P

function M.isatty(fd)
  return ffi.C.isatty(fd or 1) == 1
end

local function fmt_eta(s)
  if not s or s ~= s or s == math.huge or s < 0 then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%dh%02dm", math.floor(s / 3600), math.floor(s % 3600 / 60)) end
  if s >= 60 then return string.format("%dm%02ds", math.floor(s / 60), s % 60) end
  return string.format("%ds", s)
end
M.fmt_eta = fmt_eta

-- opts: out (a writer with :write/:flush, default io.stdout), tty (default isatty(1)),
-- total (last step, or nil for no limit), every (plain-line period, s), redraw (s), mode
-- ("auto" | "line" | "plain" | "none").
function M.new(opts)
  opts = opts or {}
  local mode = opts.mode or "auto"
  if mode == "auto" then mode = (opts.tty == nil and M.isatty(1) or opts.tty) and "line" or "plain" end
  return setmetatable({
    out = opts.out or io.stdout, mode = mode, total = opts.total,
    every = opts.every or 10, redraw = opts.redraw or 0.2,
    last_draw = -math.huge, last_plain = nil, live = false,
    window = {},   -- recent {t, step} samples for the rate
  }, P)
end

function P:rate(t, step)
  local w = self.window
  w[#w + 1] = { t, step }
  -- live line: the last 5 s; plain lines: the last three periods (a steadier ETA)
  local span = self.mode == "plain" and 3 * self.every or 5
  while #w > 2 and t - w[1][1] > span do table.remove(w, 1) end
  local a, b = w[1], w[#w]
  if b[1] > a[1] then return (b[2] - a[2]) / (b[1] - a[1]) end
  return nil
end

function P:text(step, sps, loss, acc)
  local parts = { string.format("step %d", step) }
  if self.total then parts[1] = string.format("step %d/%d", step, self.total) end
  parts[#parts + 1] = sps and string.format("%.2f steps/s", sps) or "- steps/s"
  if loss then parts[#parts + 1] = string.format("loss %.4f", loss) end
  if acc then parts[#parts + 1] = string.format("%s %.4f", acc[1], acc[2]) end
  if self.total then
    parts[#parts + 1] = "ETA " .. (sps and sps > 0 and fmt_eta((self.total - step) / sps) or "?")
  end
  return table.concat(parts, "  ")
end

-- t: monotonic seconds; acc: {name, value} of the last evaluation or nil.
function P:update(t, step, loss, acc)
  local sps = self:rate(t, step)
  if self.mode == "line" then
    if t - self.last_draw < self.redraw then return end
    self.last_draw = t
    self.out:write("\r\27[K", self:text(step, sps, loss, acc))
    self.out:flush()
    self.live = true
  elseif self.mode == "plain" then
    if not self.last_plain then self.last_plain = t end
    if t - self.last_plain < self.every then return end
    self.last_plain = t
    self.out:write(self:text(step, sps, loss, acc), "\n")
    self.out:flush()
  end
end

-- Erases the live line (if any) so that a normal line can be printed.
function P:clear()
  if self.live then
    self.out:write("\r\27[K")
    self.live = false
    self.last_draw = -math.huge
  end
end

function P:finish()
  self:clear()
  self.out:flush()
end

return M

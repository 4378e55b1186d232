-- agt.session.output — what a run prints: lines on stdout and stderr, each optionally tee'd to
-- a file (--stdout-to, --stderr-to), and the --trace lines of each phase of each step.
--
--   local out = Output.new{ quiet =, trace =, stdout_to =, stderr_to = }  (files opened to append)
--   out:say(line)  out:say_err(line)  out:trace(step, what, "begin" | "end")  out:close()
--   out.progress: a live progress display (agt.progress) cleared before each line, or nil
-- --quiet silences stdout and the trace on the terminal; the files still get everything.
local M = {}

local Output = {}
Output.__index = Output

local function tee(stream, fh)
  return {
    write = function(_, ...)
      if stream then stream:write(...) end
      if fh then fh:write(...) end
    end,
    flush = function()
      if stream then stream:flush() end
      if fh then fh:flush() end
    end,
  }
end

-- Raises "--stdout-to: cannot open ..." (or --stderr-to) when a file cannot be opened.
function M.new(o)
  local self = setmetatable({ traced = o.trace, files = {} }, Output)
  for i, k in ipairs({ "stdout_to", "stderr_to" }) do
    if o[k] then
      local fh, err = io.open(o[k], "a")
      if not fh then
        self:close()
        error(string.format("--%s: cannot open for appending: %s", k:gsub("_", "-"), err), 0)
      end
      self.files[i] = fh
    end
  end
  local outfh, errfh = self.files[1], self.files[2]
  self.out = tee(not o.quiet and io.stdout or nil, outfh)
  self.err = tee(io.stderr, errfh)
  self.trace_out = tee(not o.quiet and io.stderr or nil, errfh)
  return self
end

function Output:say(line)
  if self.progress then self.progress:clear() end
  self.out:write(line, "\n")
  self.out:flush()
end

function Output:say_err(line)
  if self.progress then self.progress:clear() end
  self.err:write(line, "\n")
  self.err:flush()
end

-- AggregaThor's trace line: "[TRACE] (begin) step 3: Master: ..." (end lines indented to match).
function Output:trace(step, what, phase)
  if not self.traced then return end
  self.trace_out:write(string.format("[TRACE] (%s) %sstep %d: %s\n", phase,
                                     phase == "end" and "  " or "", step, what))
  self.trace_out:flush()
end

function Output:close()
  for i = 1, 2 do
    if self.files[i] then self.files[i]:close(); self.files[i] = false end
  end
end

return M

-- agt.session.evaluator — evaluates θ on the experiment's test set: prints the metrics, appends
-- them to the evaluation file in AggregaThor's form ("<wall s>\t<step>\t<name>:<value>..."), and
-- passes them to the summaries. The first evaluation also writes "<file>.info" beside the file
-- (what the run is: agt plot's labels). A step is appended once: the evaluation a resumed run
-- makes at its restored step is printed, not written again.
--
--   local ev = Evaluator.new{ exp =, file = path or nil, info = fn() -> {{key, value}, ...},
--                             out = agt.session.output, summaries = agt.session.summaries }
--   ev:evaluate(theta, step) -> metrics ({ {name, value}, ... }, the experiment's order)
--   ev.last_step, ev.last_time (monotonic seconds) of the last evaluation
--   ev:close()
local fs = require("agt.fs")
local clock = require("agt.clock")
local checked = require("agt.tfevents").checked  -- raises naming the file when a write failed

local M = {}

local Evaluator = {}
Evaluator.__index = Evaluator

function M.new(c)
  return setmetatable({ exp = c.exp, file = c.file, info = c.info, out = c.out,
                        summaries = c.summaries }, Evaluator)
end

local function fmtv(v)
  if type(v) == "number" then return string.format("%.9g", v) end
  return tostring(v)
end

-- The step of the last line of an existing evaluation file (a run being resumed), or nil.
-- (Only a regular file's last 4 kB are read: the path may be a device such as /dev/full.)
local function last_step(path)
  local fh = fs.kind(path) == "file" and io.open(path, "rb")
  if not fh then return nil end
  local size = fh:seek("end")
  fh:seek("set", math.max(0, size - 4096))
  local tail = fh:read(4096) or ""
  fh:close()
  local step
  for line in tail:gmatch("[^\n]+") do step = tonumber(line:match("^[^\t]*\t(%d+)\t")) or step end
  return step
end

function Evaluator:_open()
  local dir = self.file:match("^(.*)/[^/]+$")
  if dir then fs.mkdir_p(dir) end
  self.recorded_step = last_step(self.file)
  local fh, err = io.open(self.file, "a")
  if not fh then error("--evaluation-file: cannot open: " .. err, 0) end
  self.fh = fh
  local path = self.file .. ".info"
  local info = io.open(path, "w")
  if info then
    for _, kv in ipairs(self.info()) do checked(path, "write", info:write(kv[1], "=", tostring(kv[2]), "\n")) end
    checked(path, "write", info:close())
  end
end

function Evaluator:evaluate(theta, step)
  local t0 = clock.mono()
  local metrics = self.exp:evaluate(theta)
  local took = clock.mono() - t0
  local wall = clock.wall()
  local parts, shown = {}, {}
  for _, m in ipairs(metrics) do
    parts[#parts + 1] = m[1] .. ":" .. fmtv(m[2])
    shown[#shown + 1] = m[1] .. " = " .. fmtv(m[2])
  end
  -- A resumed run evaluates again at the restored step, which its file already holds: the file
  -- and the summaries get one row per step (tools that pivot on the step need that).
  local recorded = false
  if self.file then
    if not self.fh then self:_open() end
    recorded = self.recorded_step == step
    if not recorded then
      checked(self.file, "write", self.fh:write(string.format("%.6f\t%d\t%s\n", wall, step,
                                                              table.concat(parts, "\t"))))
      checked(self.file, "write", self.fh:flush())
      self.recorded_step = step
    end
  end
  self.out:say(string.format("Step %d: %s (took %.3f s)", step, table.concat(shown, ", "), took))
  if self.summaries and not recorded then self.summaries:metrics(step, wall, metrics) end
  self.last_step, self.last_time = step, clock.mono()
  return metrics
end

-- Raises, naming the file, when the last bytes could not be written (a full disk).
function Evaluator:close()
  local fh = self.fh
  self.fh = nil
  if fh then checked(self.file, "write", fh:close()) end
end

return M

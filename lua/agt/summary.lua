-- agt.summary — training summaries: a TensorBoard event file plus a CSV of the same scalars.
--
-- One summary directory holds one event file per run (a resumed run opens a new one, as
-- TensorFlow does; TensorBoard merges them by step) and one `summary.csv` appended across runs,
-- in long form: `wall_time,step,tag,value`, so that tags may come and go between rows. Each run
-- opens with a SessionLog START event and ends with STOP. Everything is flushed at each call to
-- flush(), so a killed run loses at most the rows since the last flush. A failed write, flush
-- or close (a full disk) raises an error naming the file.
local TF = require("agt.tfevents")
local checked = TF.checked

local M = {}
local Summary = {}
Summary.__index = Summary

-- Opens the summaries of dir. opts.wall_time: the start time (default now), opts.step.
function M.open(dir, opts)
  opts = opts or {}
  local now = opts.wall_time or os.time()
  local w, err = TF.writer(dir, { wall_time = now, host = opts.host })
  if not w then return nil, err end
  local csv_path = dir .. "/summary.csv"
  local existed = io.open(csv_path, "r")
  if existed then existed:close() end
  local csv
  csv, err = io.open(csv_path, "a")
  if not csv then w:close(); return nil, err end
  local s = setmetatable({ dir = dir, events = w, csv = csv, csv_path = csv_path,
                           path = w.path }, Summary)
  local ok
  ok, err = pcall(function()
    if not existed then checked(csv_path, "write", csv:write("wall_time,step,tag,value\n")) end
    w:session_log(opts.step or 0, now, TF.START)
  end)
  if not ok then pcall(w.close, w); csv:close(); return nil, err end
  return s
end

local function csv_field(s)
  if s:find('[",\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

-- scalars: list of {tag, number}; non-numbers are skipped.
function Summary:scalars(step, wall_time, scalars)
  local kept = {}
  for _, tv in ipairs(scalars) do
    if type(tv[2]) == "number" then
      kept[#kept + 1] = tv
      checked(self.csv_path, "write", self.csv:write(string.format("%.6f,%d,%s,%.9g\n", wall_time,
                                                   step, csv_field(tv[1]), tv[2])))
    end
  end
  if #kept > 0 then self.events:scalars(step, wall_time, kept) end
end

function Summary:flush()
  self.events:flush()
  checked(self.csv_path, "write", self.csv:flush())
end

-- Closes both files (both, even when the first fails), then raises the first failure.
function Summary:close(step, wall_time)
  if not self.events then return end
  local events, csv = self.events, self.csv
  self.events, self.csv = nil, nil
  local ok1, e1 = pcall(function()
    events:session_log(step or 0, wall_time or os.time(), TF.STOP)
    events:close()
  end)
  if not ok1 then pcall(events.close, events) end
  local ok2, e2 = csv:close()
  if not ok1 then error(e1, 0) end
  checked(self.csv_path, "write", ok2, e2)
end

-- Reads summary.csv back: list of {wall_time, step, tag, value}.
function M.read_csv(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local rows, first = {}, true
  for line in f:lines() do
    if first then
      first = false
    else
      local wall, step, tag, value = line:match('^([^,]+),([^,]+),(.*),([^,]+)$')
      if tag and tag:sub(1, 1) == '"' then tag = tag:sub(2, -2):gsub('""', '"') end
      if wall then rows[#rows + 1] = { tonumber(wall), tonumber(step), tag, tonumber(value) } end
    end
  end
  f:close()
  return rows
end

return M

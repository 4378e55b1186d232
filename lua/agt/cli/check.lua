-- agt check — puts a rule, attack or experiment file through the checks the shipped ones pass.
local check = require("agt.check")

local usage = [[
Usage: agt check FILE.lua [--reference RULE] [--args key:value...]

Loads a rule, an attack or an experiment file (which one is told by its fields) and checks it:
  every file  its table against the contract: known fields (a typo such as 'require' for
              'requires' is named), their types, its argument entries, experiment defaults
  a rule      its n/f requirement (built at the smallest n it takes for f = 1 and 2, refused
              one below with n and f named); on random inputs: a finite output and a valid
              info (selected rows 1-based, within 1..n); determinism; permutation invariance
              (not asked of a pre-aggregation step); a finite output with f rows of NaN, +inf,
              -inf or a NaN coordinate; with --reference RULE (a name or a .lua path) the same
              output as that rule, within float rounding
  an attack   built for n = 11, f = r = 2 (median as the rule): honest rows untouched, every
              Byzantine row written, the same rows for the same seed, its state restored
  an experiment  its data and model load, one worker's gradient is finite
  --args WORDS   key:value arguments of the attack or experiment
Prints one line per check; exit status 0 when all pass, 1 otherwise, 2 on a bad command.]]

return function(args)
  local path, opts = nil, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then print(usage); return 0 end
    if a == "--reference" then
      opts.reference = args[i + 1]
      if not opts.reference then io.stderr:write("agt check: --reference: expects a rule name or path\n"); return 2 end
      i = i + 2
    elseif a == "--args" then
      opts.args = {}
      i = i + 1
      while i <= #args and not args[i]:match("^%-%-") do opts.args[#opts.args + 1] = args[i]; i = i + 1 end
    elseif a:match("^%-%-") then
      io.stderr:write("agt check: unknown flag ", a, " (see agt check --help)\n")
      return 2
    elseif path then
      io.stderr:write("agt check: one file at a time (got '", path, "' and '", a, "')\n")
      return 2
    else
      path = a
      i = i + 1
    end
  end
  if not path then io.stderr:write("agt check: no file given\n", usage, "\n"); return 2 end
  local report = check.file(path, opts)
  io.write(string.format("%s: %s\n", path, report.what or "not a plugin file"))
  for _, c in ipairs(report.checks) do
    io.write(string.format("  %-4s %s%s\n", c.ok and "ok" or "FAIL", c.name,
      c.detail ~= "" and (": " .. c.detail) or ""))
  end
  io.write(string.format("%d check(s), %d failed\n", #report.checks, report.failed))
  return report.failed == 0 and 0 or 1
end

-- agt keygen — the CURVE keys of a distributed run: one keypair for the PS and one per worker
-- of the cluster, in DIR (created with mode 700; the secret keys readable by their owner only).
--
--   agt keygen CLUSTER DIR [--ps-job-name ps] [--wk-job-name workers]
--
-- Writes DIR/<job>-<i>.pub and DIR/<job>-<i>.secret (Z85 text) for ps-0 and workers-0..n-1.
-- The PS needs its own pair and every worker's .pub; worker i needs ps-0.pub and its own pair
-- (copy them to the hosts: the PS admits only the public keys of the cluster's workers, and a
-- worker's identity is its key). Existing keys are kept: delete DIR to make new ones.
local N = require("agt.net")
local CL = require("agt.cluster")
local fs = require("agt.fs")

local USAGE = "Usage: agt keygen CLUSTER DIR [--ps-job-name NAME] [--wk-job-name NAME]"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

return function(args)
  local pos, jobs = {}, { ps = "ps", workers = "workers" }
  local i = 1
  while i <= #(args or {}) do
    local a = args[i]
    if a == "--help" or a == "-h" then io.stdout:write(USAGE, "\n"); return 0 end
    if a == "--ps-job-name" or a == "--wk-job-name" then
      if not args[i + 1] then io.stderr:write("agt keygen: ", a, ": expects a value\n"); return 2 end
      jobs[a == "--ps-job-name" and "ps" or "workers"] = args[i + 1]
      i = i + 2
    elseif a:match("^%-%-") then
      io.stderr:write("agt keygen: unknown flag ", a, "\n", USAGE, "\n")
      return 2
    else
      pos[#pos + 1] = a
      i = i + 1
    end
  end
  if #pos ~= 2 then io.stderr:write(USAGE, "\n"); return 2 end
  local ok, c = pcall(CL.load, pos[1], jobs)
  if not ok then io.stderr:write("agt keygen: ", tostring(c), "\n"); return 2 end
  local dir = pos[2]
  local okd, err = fs.mkdir_p(dir)
  if not okd then io.stderr:write("agt keygen: ", tostring(err), "\n"); return 1 end
  os.execute("chmod 700 " .. sh_quote(dir))
  local made, kept = 0, 0
  local function pair(job, k)
    local pub, sec = CL.key_path(dir, job, k, "pub"), CL.key_path(dir, job, k, "secret")
    if fs.exists(pub) and fs.exists(sec) then kept = kept + 1; return end
    local p, s = N.keypair()
    local fh = assert(io.open(sec, "w"))
    fh:write(s, "\n")
    fh:close()
    os.execute("chmod 600 " .. sh_quote(sec))
    fh = assert(io.open(pub, "w"))
    fh:write(p, "\n")
    fh:close()
    made = made + 1
  end
  pair(c.ps_job, 0)
  for k = 0, #c.workers - 1 do pair(c.wk_job, k) end
  io.stdout:write(string.format("agt keygen: %d keypair(s) made, %d kept, in %s\n", made, kept, dir))
  return 0
end

-- agt.cluster — the cluster of a distributed run, as AggregaThor's runner.py takes it:
-- JSON {"<job>": ["host:port", ...], ...} given inline or as the path of a file holding it, or
-- "G5k" (Grid'5000, OAR): the nodes of the job, one per line of the file $OAR_FILE_NODES (OAR
-- lists a node once per core: repeated lines count once), the first the PS and the others the
-- workers, all on port 7000 ("G5k:PORT" for another).
--
--   local CL = require("agt.cluster")
--   local c = CL.load(text_or_path, { ps = "ps", workers = "workers" })   (the job names)
--   c.ps            "host:port" of the parameter server (the first of the PS job)
--   c.workers       { "host:port", ... } (one per worker; its index is its id, from 0)
--   CL.json(c)      the cluster as JSON text (inline: what a remote worker is given)
--   CL.host(hostport) -> the host part ("[::1]:7000" -> "::1")
--   CL.endpoint(hostport, bind) -> "tcp://host:port" ("tcp://*:port" to bind a host name)
--   CL.parse_id(text, c, job) -> index from 0 ("workers:3" -> 3)
-- Keys (CURVE, made by `agt keygen`): DIR/<job>-<i>.pub and DIR/<job>-<i>.secret, Z85 text;
--   CL.key_path(dir, job, i, "pub" | "secret")   CL.read_key(path) -> the 40 characters
-- Errors name what is wrong: "cluster: no job 'workers' (jobs: ps, wk)".
local cjson = require("cjson.safe")

local M = {}

local function fail(fmt, ...) error(string.format("cluster: " .. fmt, ...), 0) end

local function check_hostport(s, where)
  if type(s) ~= "string" then fail("%s: expects \"host:port\", got %s", where, type(s)) end
  local host, port = s:match("^(.+):(%d+)$")
  port = tonumber(port)
  if not host or port < 1 or port > 65535 then
    fail("%s: expects \"host:port\" with a port in 1..65535, got '%s'", where, s)
  end
  return host, port
end

M.G5K_PORT = 7000

-- The G5k cluster as a table of jobs, from $OAR_FILE_NODES.
local function g5k(spec, ps_job, wk_job)
  local port = M.G5K_PORT
  local p = spec:match("^G5k:(.*)$")
  if p then
    port = tonumber(p)
    if not port or port ~= math.floor(port) or port < 1 or port > 65535 then
      fail("G5k:PORT expects a port in 1..65535, got '%s'", p)
    end
  end
  local file = os.getenv("OAR_FILE_NODES")
  if not file or file == "" then
    fail("G5k: $OAR_FILE_NODES is not set (it is set inside an OAR job of Grid'5000; or give a JSON cluster)")
  end
  local fh, err = io.open(file, "r")
  if not fh then fail("G5k: cannot read $OAR_FILE_NODES (%s): %s", file, tostring(err)) end
  local nodes, seen = {}, {}
  for line in fh:lines() do
    local node = line:match("^%s*(.-)%s*$")
    if node ~= "" and not seen[node] then
      if node:find("[%s\"'\\]") then fail("G5k: '%s' in %s is not a host name", node, file) end
      seen[node] = true
      nodes[#nodes + 1] = node
    end
  end
  fh:close()
  if #nodes < 2 then
    fail("G5k: %s lists %d distinct node(s); a run needs 2 or more (the first is the PS, the others the workers)",
         file, #nodes)
  end
  local function hp(node) return (node:find(":") and "[" .. node .. "]" or node) .. ":" .. port end
  local t = { [ps_job] = { hp(nodes[1]) }, [wk_job] = {} }
  for i = 2, #nodes do t[wk_job][i - 1] = hp(nodes[i]) end
  return t
end

function M.load(spec, jobs)
  jobs = jobs or {}
  local ps_job, wk_job = jobs.ps or "ps", jobs.workers or "workers"
  if type(spec) ~= "string" or spec == "" then fail("expects JSON text, the path of a JSON file, or G5k") end
  if spec == "G5k" or spec:match("^G5k:") then
    local t = g5k(spec, ps_job, wk_job)
    return { ps = t[ps_job][1], workers = t[wk_job], ps_job = ps_job, wk_job = wk_job }
  end
  local text = spec
  if not spec:match("^%s*{") then
    local fh, err = io.open(spec, "r")
    if not fh then fail("cannot read '%s' (give JSON text or a file): %s", spec, tostring(err)) end
    text = fh:read("*a")
    fh:close()
  end
  local t, err = cjson.decode(text)
  if type(t) ~= "table" then fail("not valid JSON: %s", tostring(err or "not an object")) end
  local names = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" or type(v) ~= "table" then fail("each job must map a name to a list of \"host:port\"") end
    names[#names + 1] = k
  end
  table.sort(names)
  local function job(name)
    local list = t[name]
    if not list then fail("no job '%s' (jobs: %s)", name, table.concat(names, ", ")) end
    if #list == 0 then fail("job '%s' has no tasks", name) end
    for i, s in ipairs(list) do check_hostport(s, string.format("%s[%d]", name, i - 1)) end
    return list
  end
  local c = { ps = job(ps_job)[1], workers = job(wk_job), ps_job = ps_job, wk_job = wk_job }
  return c
end

function M.json(c)
  return cjson.encode({ [c.ps_job] = { c.ps }, [c.wk_job] = c.workers })
end

function M.host(hostport)
  local host = check_hostport(hostport, "host")
  return host:match("^%[(.*)%]$") or host
end

-- A numeric IPv4/IPv6 address binds as is; a host name binds every interface.
function M.endpoint(hostport, bind)
  local host, port = check_hostport(hostport, "endpoint")
  host = host:match("^%[(.*)%]$") or host
  if bind and not host:match("^[%d.]+$") and not host:find(":") then host = "*" end
  if host:find(":") then host = "[" .. host .. "]" end
  return string.format("tcp://%s:%d", host, port)
end

function M.parse_id(text, c, job)
  local j, i = tostring(text):match("^([^:]+):(%d+)$")
  if not j then error(string.format("--id: expects JOB:INDEX (e.g. %s:0), got '%s'", job, tostring(text)), 0) end
  i = tonumber(i)
  if j ~= job then
    error(string.format("--id: '%s' is not a worker job (workers are '%s:0'..'%s:%d'; see --wk-job-name)",
                        j, job, job, #c.workers - 1), 0)
  end
  if i >= #c.workers then
    error(string.format("--id: %s:%d is not in the cluster (%d workers: %s:0..%s:%d)", j, i, #c.workers,
                        job, job, #c.workers - 1), 0)
  end
  return i
end

function M.key_path(dir, job, i, kind)
  return string.format("%s/%s-%d.%s", dir, job, i, kind)
end

function M.read_key(path)
  local fh, err = io.open(path, "r")
  if not fh then
    error(string.format("--keys: cannot read %s (make the keys with 'agt keygen CLUSTER DIR'): %s", path,
                        tostring(err)), 0)
  end
  local k = (fh:read("*a") or ""):gsub("%s+$", "")
  fh:close()
  if #k ~= 40 then error(string.format("--keys: %s does not hold a 40-character Z85 key", path), 0) end
  return k
end

return M

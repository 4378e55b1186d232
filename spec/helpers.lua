-- Helpers shared by the specs: running the agt binary as a child process, temp dirs.
local host = require("agt.host")
local H = {}

H.agt = host.root .. "/agt"

function H.shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command; returns exit code, stdout, stderr.
function H.run(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, code = os.execute(cmd .. " >" .. out .. " 2>" .. err)
  -- LuaJIT (5.1 semantics) returns the raw status from os.execute
  local rc
  if type(ok) == "number" then rc = ok >= 256 and math.floor(ok / 256) or ok else rc = code or (ok and 0 or 1) end
  local function slurp(p) local f = io.open(p, "rb"); local s = f:read("*a"); f:close(); os.remove(p); return s end
  return rc, slurp(out), slurp(err)
end

function H.agt_run(args) return H.run(H.shell_quote(H.agt) .. " " .. args) end

function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/agt-spec.XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

return H

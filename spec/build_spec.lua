-- build_spec.lua — the Makefile's CUDA detection: nvcc may be a wrapper script outside the
-- toolkit (as on the CI machine), and a build without a working nvcc or CUDA runtime is
-- CPU-only and says why instead of failing at the link.
local H = require("helpers")
local host = require("agt.host")

local root = host.root
local function features(nvcc)
  local rc, out, err = H.run("make -s -C " .. H.shell_quote(root) .. " features NVCC=" .. H.shell_quote(nvcc))
  return rc, out .. err
end

local real_nvcc = H.sh("command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc)"):match("%S+")

describe("make features", function()
  it("builds CPU-only and says why when nvcc does not run", function()
    local rc, out = features("/bin/false")
    assert.are.equal(0, rc)
    assert.truthy(out:find("building with CPU-only", 1, true), out)
    assert.truthy(out:find("does not run", 1, true), out)
  end)

  local name = "finds the CUDA runtime through an nvcc wrapper outside the toolkit"
  if not real_nvcc then
    pending(name .. " (no nvcc on this machine)")
    return
  end
  it(name, function()
    local dir = H.tmpdir()
    H.write(dir .. "/nvcc", "#!/bin/sh\nexec " .. H.shell_quote(real_nvcc) .. " \"$@\"\n")
    os.execute("chmod +x " .. H.shell_quote(dir .. "/nvcc"))
    local rc, out = features(dir .. "/nvcc")
    os.execute("rm -rf " .. H.shell_quote(dir))
    assert.are.equal(0, rc)
    assert.truthy(out:find("building with CUDA", 1, true), out)
    local libdir = out:match("CUDA runtime: ([^%)]+)%)")
    assert.truthy(libdir, out)
    assert.truthy(H.read(libdir .. "/libcudart_static.a"), "no libcudart_static.a in " .. libdir)
  end)
end)

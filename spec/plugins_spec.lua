-- agt.plugins: the one plugin finder — the built-in folder of each kind, then the folders of
-- AGT_PATH; rules, attacks, experiments, subcommands and benchmarks all listed through it.
local H = require("helpers")
local P = require("agt.plugins")
local fs = require("agt.fs")
local host = require("agt.host")

describe("agt.plugins", function()
  it("lists each kind's built-in folder, as ls does", function()
    for kind, dir in pairs({ aggregators = "lua/aggregators", attacks = "lua/attacks",
                             experiments = "lua/experiments", bench = "bench" }) do
      local ls = {}
      for l in H.sh("ls " .. H.shell_quote(host.root .. "/" .. dir)):gmatch("[^\n]+") do
        local stem = l:match("^(.+)%.lua$")
        if stem then ls[#ls + 1] = stem end
      end
      table.sort(ls)
      assert.are.same(ls, P.list(kind), kind)
    end
    local cmds = P.list("commands")
    assert.truthy(#cmds >= 4)
    for _, c in ipairs(cmds) do assert.are_not.equal("init", c) end
    local path, module = P.find("aggregators", "krum")
    assert.are.equal(host.root .. "/lua/aggregators/krum.lua", path)
    assert.are.equal("aggregators.krum", module)
    assert.are.equal(require("aggregators.krum"), P.load("aggregators", "krum"))
    assert.is_nil(P.find("aggregators", "nope"))
    assert.is_nil(P.find("aggregators", "../agt/util"))
    assert.is_nil(P.find("commands", "init"))
    assert.has_error(function() P.list("widgets") end)
  end)

  it("finds a user's rules, attacks and experiments through AGT_PATH", function()
    local dir = H.tmpdir()
    fs.mkdir_p(dir .. "/aggregators")
    local f = assert(io.open(dir .. "/aggregators/my_mean.lua", "w"))
    f:write([[
local ffi = require("agt.ffi")
return { name = "my_mean", summary = "the average, as a plugin",
         aggregate = function(self, G, out)
           self:kernel("average", self:ptr(G), self.n, self.d, self:ptr(out))
           return {}
         end }
]])
    f:close()
    local script = dir .. "/use.lua"
    f = assert(io.open(script, "w"))
    f:write([[
local P = require("agt.plugins")
local A = require("agt.aggregators")
local T = require("agt.tensor")
print(table.concat(P.list("aggregators"), ","))
local G, out = T.new({ 3, 2 }), T.new({ 2 })
for i = 0, 5 do G.ptr[i] = i + 1 end
A.new("my_mean", 3, 0):aggregate(G, out)
print(out.ptr[0], out.ptr[1])
]])
    f:close()
    local rc, out, err = H.run("AGT_PATH=" .. H.shell_quote(dir) .. ":/nonexistent " ..
                               H.shell_quote(H.agt) .. " " .. H.shell_quote(script))
    os.execute("rm -rf " .. H.shell_quote(dir))
    assert.are.equal(0, rc, err)
    local list, values = out:match("^([^\n]*)\n([^\n]*)")
    assert.truthy(("," .. list .. ","):find(",my_mean,", 1, true), list)
    assert.truthy(("," .. list .. ","):find(",krum,", 1, true), list)
    assert.are.equal("3\t4", values)
  end)
end)

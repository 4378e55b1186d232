-- A rogue worker rank for spec/mpi_spec.lua: `mpirun -np 4 agt run --MPI ... : -np 1 agt
-- spec/mpi/rogue.lua` makes it worker 3 of 4. It joins as agt worker does, then each step sends,
-- in turn, a row of the wrong size, garbage bytes, or a row claiming worker 0 — each followed by
-- a row of zeros of the right size, so that the PS counts the fault and the step goes on. With
-- the argument "stall" it sends rows of zeros only, and stalls 6 s (no MPI call) at step 2.
-- Exits at BYE.
local ffi = require("ffi")
local cjson = require("cjson")
local MPI = require("agt.mpi")
local N = require("agt.net")

local C = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")

os.exit(MPI.run(function(rank)
  local w = rank - 1
  local hello = MPI.transport(2 ^ 24)
  hello:send(nil, N.HELLO, w, -1, 0)
  local m = hello:recv(60000)
  assert(m and m.type == N.CONFIG, "no CONFIG")
  local cfg = cjson.decode(m:text())
  hello:close()
  local d = cfg.d
  local t = MPI.transport(d * 4)
  t:set_session(tonumber(cfg.session, 16))
  t:send(nil, N.READY, w, -1, d)
  local row = ffi.new("float[?]", d)
  while true do
    m = t:recv(60000)
    if not m or m.type == N.BYE then break end
    if m.type == N.THETA and arg[1] == "stall" then
      if m.step == 2 then os.execute("sleep 6") end
      t:send(nil, N.GRAD, w, m.step, 0, row, d * 4)
    elseif m.type == N.THETA then
      local k = m.step % 3
      if k == 0 then
        t:send(nil, N.GRAD, w, m.step, 0, row, (d - 1) * 4)
      elseif k == 1 then
        local junk = string.rep("z", 200)
        C.raw_send(junk, 0, C.TAG)
      else
        t:send(nil, N.GRAD, 0, m.step, 0, row, d * 4)
      end
      if k ~= 0 then t:send(nil, N.GRAD, w, m.step, 0, row, d * 4) end
    end
  end
  t:close()
  return 0
end))

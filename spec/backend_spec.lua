-- backend_spec — the cross-backend spec: every op registered on a device backend (agt.backend)
-- against its CPU twin, on random inputs with NaN and ±inf, and every rule and pre-aggregation
-- chain through agt.aggregators with G on that device against the same rule on the CPU.
--
-- Registering a device op without a case here fails the spec (the case table is checked on
-- every machine); running the cases needs the device: without one, they are pending with the
-- reason. Tolerances: element-wise ops, per-coordinate rules, row choices and averages of
-- chosen rows are bit-identical (NaN equals NaN); distances agree to 1e-5 relative, clipping
-- and ARC to 1e-6, the iterative rules to 1e-4 (see spec/gpu_spec.lua for why).
local B = require("agt.backend")
local A = require("agt.aggregators")
local T = require("agt.tensor")
local R = require("agt.rng")
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C

local devices = {}
for _, name in ipairs(B.names()) do
  if name ~= "cpu" then devices[#devices + 1] = name end
end

-- Runs fn for each available device backend; pending with the reason for the others.
local function on_devices(what, fn)
  for _, name in ipairs(devices) do
    local ok, why = B.get(name):available()
    if ok then
      it(what .. " (" .. name .. ")", function() fn(B.get(name)) end)
    else
      pending(what .. " (" .. name .. ": " .. tostring(why) .. ")")
    end
  end
end

local function input(seed, n, d, special)
  local G = R.new(seed, "backend_spec"):normal(T.new({ n, d }), 0, 1)
  local p = G.ptr
  if special and n >= 4 then
    for c = 0, d - 1 do p[(n - 1) * d + c] = 0 / 0 end            -- a NaN row
    for c = 0, d - 1, 3 do p[(n - 2) * d + c] = math.huge end      -- +inf entries
    for c = 1, d - 1, 5 do p[(n - 3) * d + c] = -math.huge end     -- -inf entries
  end
  return G
end

local function first_diff(a, b, tol)
  local pa, pb = a.ptr, b.ptr
  for i = 0, #a - 1 do
    local x, y = pa[i], pb[i]
    local same = x == y or (x ~= x and y ~= y)
    if not same and tol and tol > 0 and x == x and y == y then
      same = math.abs(x - y) <= tol * math.max(1, math.abs(y))
    end
    if not same then return string.format("first difference at %d: device %.9g cpu %.9g", i, x, y) end
  end
end

-- ---- the cases: one per device op ----------------------------------------------------------
-- A case runs op's kernel k (of backend be) on tensors of that backend (made by `new`, filled
-- from host tensors) and returns the host tensors and arrays to compare; tol: 0 = bit-identical.
local N, Fb, D = 11, 2, 1031   -- D: not a multiple of any vector width

local function vec_case(run)
  return { tol = 0, run = function(k, new)
    local x = new(input(1, 5, 1000, true))   -- 5000 values, a NaN row and ±inf entries
    local y = new(input(2, 5, 1000, true))
    run(k, x, y, 5000)
    return { x:to("cpu") }
  end }
end

local function red_case(call)
  return { tol = 1e-12, run = function(k, new)
    local res = {}
    for _, c in ipairs({ { 3, 300, 1001, false }, { 4, 5, 1000, true }, { 5, 1, 3, false } }) do
      local x, y = new(input(c[1], c[2], c[3], c[4])), new(input(c[1] + 10, c[2], c[3], c[4]))
      res[#res + 1] = call(k, x, y)
    end
    return res
  end }
end

-- A rule kernel call on G (N x D) writing an output of `rows` rows (nil: one vector) and,
-- through h, host arrays (sel: selected rows, D: distances, it: iterations, compared within
-- it_slack: an iterative rule's float iterate may stop a step before the exact one).
local function gar_case(rows, tol, call, it_slack)
  return { tol = tol, it_slack = it_slack or 0, run = function(k, new)
    local G = new(input(7, N, D, true))
    local out = new(T.new(rows and { rows, D } or { D }))
    local h = { sel = ffi.new("int64_t[?]", N), D = ffi.new("double[?]", N * N),
                it = ffi.new("int64_t[1]") }
    call(k, G:pointer(), out:pointer(), h)   -- the op raises on a failed status
    local res = { out:to("cpu") }
    for i = 0, N - 1 do res[#res + 1] = tonumber(h.sel[i]) end
    for i = 0, N * N - 1 do res[#res + 1] = h.D[i] end
    return res, tonumber(h.it[0])
  end }
end

-- The training kernels (GEMM, layers, loss, optimizers): a case makes its host inputs with
-- `host` (each call a fresh stream: the CPU and the device runs see the same values), special
-- = NaN and ±inf as in input(), pos = |x| (second-moment slots; a number: |x| + pos), and
-- returns what it wrote. A product sums whole rows, so where input()'s specials would make every
-- result NaN or inf, `few` puts a NaN, a +inf and a -inf at three places of a finite input.
local function host(seed, rows, cols, special, pos)
  local h = input(seed, rows, cols, special)
  if pos then
    local p, add = h.ptr, type(pos) == "number" and pos or 0
    for i = 0, #h - 1 do p[i] = math.abs(p[i]) + add end
  end
  return h
end

local function few(seed, rows, cols)
  local h = input(seed, rows, cols, false)
  local n, p = rows * cols, h.ptr
  p[(seed * 7) % n], p[(seed * 13 + 5) % n], p[(seed * 29 + 11) % n] = 0 / 0, math.huge, -math.huge
  return h
end

local function gemm_case()
  return { tol = 1e-4, run = function(k, new)
    local m, n, kk = 37, 29, 53
    local res = {}
    for _, t in ipairs({ { 0, 0 }, { 1, 0 }, { 0, 1 }, { 1, 1 } }) do
      local ta, tb = t[1], t[2]
      local A = new(ta == 0 and few(20, m, kk) or few(20, kk, m))
      local Bm = new(tb == 0 and few(21, kk, n) or few(21, n, kk))
      local Cm = new(host(22, m, n, false))
      k(ta, tb, m, n, kk, 0.75, A:pointer(), ta == 0 and kk or m, Bm:pointer(), tb == 0 and n or kk,
        ta == tb and 0.5 or 0.0, Cm:pointer(), n)
      res[#res + 1] = Cm:to("cpu")
    end
    return res
  end }
end

-- dense layer: B x in inputs (normal, no zeros: the CPU takes its dense path), W in x out
local LB, LIN, LOUT = 13, 70, 23

local function act_case(tol, call)
  return { tol = tol, run = function(k, new)
    local res = {}
    for act = 0, 2 do
      for _, out in ipairs(call(k, new, act)) do res[#res + 1] = out:to("cpu") end
    end
    return res
  end }
end

-- an optimizer on finite inputs (slots listed in `pos` non-negative) and on NaN/±inf: θ and
-- every slot after two updates
local function optim_case(nslots, pos, call)
  return { tol = 0, run = function(k, new)
    local res = {}
    for _, special in ipairs({ false, true }) do
      local th = new(host(40, 5, 1000, special))
      local g = new(host(41, 5, 1000, special))
      local slots = {}
      for i = 1, nslots do slots[i] = new(host(41 + i, 5, 1000, special, pos[i])) end
      call(k, th, g, slots, 5000, 1)
      call(k, th, g, slots, 5000, 2)
      res[#res + 1] = th:to("cpu")
      for i = 1, nslots do res[#res + 1] = slots[i]:to("cpu") end
    end
    return res
  end }
end

-- L1/L2: g and the penalty, on 100000 finite values (more than one CPU chunk) and on NaN/±inf
local function reg_case()
  return { tol = 1e-12, run = function(k, new)
    local res = {}
    local pen = ffi.new("double[1]")
    for _, c in ipairs({ { 100, 1000, false }, { 5, 1000, true } }) do
      local th = new(host(50, c[1], c[2], c[3]))
      local g = new(host(51, c[1], c[2], c[3]))
      k(th:pointer(), g:pointer(), c[1] * c[2], 0.01, pen)
      res[#res + 1] = g:to("cpu")
      res[#res + 1] = pen[0]
    end
    return res
  end }
end

local function labels(seed, B, K)   -- every class, in a scrambled order
  local y = T.new({ B }, "i32")
  for i = 0, B - 1 do y.ptr[i] = (i * 7 + seed) % K end
  return y
end

-- Convolution geometries: {B, C, H, W, OC, KH, KW, sh, sw, padding, act}: SAME at stride 1 (the
-- CPU's direct dx), SAME at stride 2 on odd sizes (col2im), a 1x1 stride-2 shortcut (VALID), a
-- rectangular kernel, cnnet's 5x5, SAME at stride 2 on even sizes (padding only after: cuDNN
-- cannot, so im2col runs it either way), and two of 256 output pixels a sample (cuDNN takes
-- float32 convolutions from there: dx as a forward convolution at stride 1, by GEMM at 2).
local CONVS = {
  { 3, 3, 9, 9, 5, 3, 3, 1, 1, "SAME", 0 }, { 2, 4, 11, 7, 6, 3, 3, 2, 2, "SAME", -1 },
  { 3, 5, 8, 8, 7, 1, 1, 2, 2, "VALID", -1 }, { 2, 3, 7, 10, 4, 3, 2, 1, 2, "SAME", 1 },
  { 2, 3, 12, 12, 8, 5, 5, 1, 1, "SAME", 2 }, { 2, 3, 8, 8, 4, 3, 3, 2, 2, "SAME", 0 },
  { 2, 3, 16, 16, 4, 3, 3, 1, 1, "SAME", 0 }, { 2, 3, 33, 33, 4, 3, 3, 2, 2, "VALID", -1 },
}

local function geom(n, k, s, pad)
  local o = ffi.new("size_t[2]")
  assert(C.agt_nn_conv_geometry(n, k, s, pad == "SAME" and 1 or 0, o, o + 1) == 0)
  return tonumber(o[0]), tonumber(o[1])
end

-- the conv kernels' arguments after the pointers, and the col scratch the CPU needs
local function conv_args(c)
  local Bn, Cn, H, W, OC, KH, KW, sh, sw = unpack(c, 1, 9)
  local OH, pt = geom(H, KH, sh, c[10])
  local OW, pl = geom(W, KW, sw, c[10])
  local scratch = tonumber(C.agt_nn_conv2d_scratch(Bn, Cn, H, W, OC, KH, KW, sh, sw, OH, OW))
  return { Bn, Cn, H, W, OC, KH, KW, sh, sw, pt, pl, OH, OW }, scratch
end

-- A conv case: x and dy carry a NaN, a +inf and a -inf (W stays finite: the CPU's stride-1 dx
-- multiplies W by the zeros of dy's padding, where the device adds only the products that exist).
-- dW is the sum over the zero-padded patches, as im2col's GEMM forms it: a non-finite dy whose
-- patch reaches the padding makes those dW entries NaN (inf·0) on every path, cuDNN's included.
local function conv_case(backward)
  return { tol = 1e-4, run = function(k, new, be)
    local fwd = be:op("nn.conv2d_forward")
    local res = {}
    for i, c in ipairs(CONVS) do
      local a, scratch = conv_args(c)
      local Bn, Cn, H, W, OC, KH, KW = unpack(a, 1, 7)
      local OH, OW = a[12], a[13]
      local fa = { unpack(a) }
      fa[#fa + 1] = c[11]   -- forward's activation
      local x = new(few(100 + i, Bn * Cn, H * W))
      local Wt = new(host(110 + i, OC, Cn * KH * KW, false))
      local b = new(host(120 + i, 1, OC, false))
      local y = new(T.new({ Bn * OC, OH * OW }))
      local col = new(T.new({ scratch }))
      fwd(x:pointer(), Wt:pointer(), b:pointer(), y:pointer(), col:pointer(), unpack(fa))
      if not backward then
        res[#res + 1] = y:to("cpu")
        local y2 = new(T.new({ Bn * OC, OH * OW }))   -- no bias, no activation
        fa[#fa] = -1
        fwd(x:pointer(), Wt:pointer(), nil, y2:pointer(), col:pointer(), unpack(fa))
        res[#res + 1] = y2:to("cpu")
      else
        local dy = new(few(130 + i, Bn * OC, OH * OW))
        local dx, dW, db = new(T.new({ Bn * Cn, H * W })), new(T.new({ OC, Cn * KH * KW })), new(T.new({ OC }))
        k(x:pointer(), Wt:pointer(), dy:pointer(), dx:pointer(), dW:pointer(), db:pointer(), col:pointer(), unpack(a))
        res[#res + 1], res[#res + 2], res[#res + 3] = dx:to("cpu"), dW:to("cpu"), db:to("cpu")
        fwd(x:pointer(), Wt:pointer(), b:pointer(), y:pointer(), col:pointer(), unpack(fa))
        local dW2 = new(T.new({ OC, Cn * KH * KW }))   -- the first layer's call: no dx, no db
        k(x:pointer(), Wt:pointer(), dy:pointer(), nil, dW2:pointer(), nil, col:pointer(), unpack(a))
        res[#res + 1] = dW2:to("cpu")
      end
    end
    return res
  end }
end

-- Pool geometries {P, H, W, KH, KW, sh, sw, padding}: cnnet's 3x3/2 SAME (nn.c's 3x3 tree and
-- its eight-wide path on the CPU), fashion-cnn's 2x2/2, overlapping 3x3/1 VALID, a 2x3 window
-- with padding, a global 4x4 average.
local POOLS = {
  { 6, 17, 19, 3, 3, 2, 2, "SAME" }, { 6, 9, 9, 2, 2, 2, 2, "SAME" }, { 5, 7, 8, 3, 3, 1, 1, "VALID" },
  { 5, 7, 9, 2, 3, 2, 1, "SAME" }, { 6, 4, 4, 4, 4, 1, 1, "VALID" },
}

local function pool_args(c)
  local OH, pt = geom(c[2], c[4], c[6], c[8])
  local OW, pl = geom(c[3], c[5], c[7], c[8])
  return { c[1], c[2], c[3], c[4], c[5], c[6], c[7], pt, pl, OH, OW }
end

-- P planes with a NaN plane and ±inf entries (input()), NaN at scattered pixels, and ties: the
-- first planes rounded to halves
local function pool_input(seed, P, HW)
  local h = host(seed, P, HW, P >= 4)
  local p = h.ptr
  for i = 0, 2 * HW - 1 do p[i] = math.floor(p[i] * 2) / 2 end
  for i = 3, P * HW - 1, 37 do p[i] = 0 / 0 end
  return h
end

local function pool_case(kind, backward)
  return { tol = 0, run = function(k, new, be)
    local res = {}
    for i, c in ipairs(POOLS) do
      local a = pool_args(c)
      local P, H, W, OH, OW = a[1], a[2], a[3], a[10], a[11]
      local x = new(pool_input(140 + i, P, H * W))
      local y = new(T.new({ P, OH * OW }))
      local idx = new(T.new({ P, OH * OW }, "i32"))
      if kind == "max" then
        be:op("nn.maxpool_forward")(x:pointer(), y:pointer(), idx:pointer(), unpack(a))
      else
        be:op("nn.avgpool_forward")(x:pointer(), y:pointer(), unpack(a))
      end
      if not backward then
        res[#res + 1] = y:to("cpu")
        if kind == "max" then res[#res + 1] = idx:to("cpu") end
      else
        local dy = new(host(150 + i, P, OH * OW, false))
        local dx = new(T.new({ P, H * W }))
        if kind == "max" then
          k(dy:pointer(), idx:pointer(), nil, dx:pointer(), unpack(a))
          res[#res + 1] = dx:to("cpu")
          k(dy:pointer(), idx:pointer(), y:pointer(), dx:pointer(), unpack(a))   -- ReLU folded in
        else
          k(dy:pointer(), dx:pointer(), unpack(a))
        end
        res[#res + 1] = dx:to("cpu")
      end
    end
    return res
  end }
end

-- dropout: masks of 2, 3, 1001 and 4998 values from one stream (words left in the state's
-- buffer, whole blocks, a partial last block), then the stream's next words
local function dropout_case()
  return { tol = 0, run = function(k, new)
    local res = {}
    local r = R.new(9, "dropout")
    for i, n in ipairs({ 2, 3, 1001, 4998 }) do
      local x = new(host(160 + i, 1, n, false))
      local y, mask = new(T.new({ n })), new(T.new({ n }))
      k(x:pointer(), y:pointer(), mask:pointer(), n, i == 3 and 0 or 0.3, r.s)
      res[#res + 1], res[#res + 2] = y:to("cpu"), mask:to("cpu")
    end
    local x = new(input(165, 5, 1000, true))   -- NaN and ±inf: dropped ones are NaN too
    local y, mask = new(T.new({ 5000 })), new(T.new({ 5000 }))
    k(x:pointer(), y:pointer(), mask:pointer(), 5000, 0.5, r.s)
    res[#res + 1], res[#res + 2] = y:to("cpu"), mask:to("cpu")
    for _ = 1, 6 do res[#res + 1] = r:u32() end
    return res
  end }
end

-- batch norm: {B, C, S}: images, dense features (S = 1), one example of one pixel per channel
-- (N = 1: the running variance takes the biased one), channels of 16384 values (the device
-- splits each into parts); every activation; channel 0 of x holds a
-- NaN and channel 1 a +inf (theirs alone turn NaN), the others are finite. Sums in double in
-- two orders: 1e-5.
local BNS = { { 4, 5, 9 }, { 7, 6, 1 }, { 1, 3, 1 }, { 16, 2, 1024 } }

local function bn_input(seed, Bn, Cn, S)
  local h = host(seed, Bn, Cn * S, false)
  if Bn * S > 1 then
    h.ptr[0] = 0 / 0
    h.ptr[S] = math.huge
  end
  return h
end

local function bn_case(backward)
  return { tol = 1e-5, run = function(k, new, be)
    local fwd = be:op("nn.batchnorm_forward")
    local res = {}
    for i, c in ipairs(BNS) do
      local Bn, Cn, S = c[1], c[2], c[3]
      local x = new(bn_input(180 + i, Bn, Cn, S))
      local gamma, beta = new(host(183 + i, 1, Cn, false)), new(host(186 + i, 1, Cn, false))
      local rm, rv = new(host(189 + i, 1, Cn, false)), new(host(192 + i, 1, Cn, true))
      local mean, invstd = new(T.new({ Cn })), new(T.new({ Cn }))
      for act = -1, 2 do
        local y = new(T.new({ Bn * Cn * S }))
        fwd(x:pointer(), gamma:pointer(), beta:pointer(), y:pointer(), mean:pointer(), invstd:pointer(),
            rm:pointer(), rv:pointer(), Bn, Cn, S, 0.1, 1e-5, 1, act)
        if not backward then
          res[#res + 1], res[#res + 2], res[#res + 3] = y:to("cpu"), mean:to("cpu"), invstd:to("cpu")
          fwd(x:pointer(), gamma:pointer(), beta:pointer(), y:pointer(), nil, nil, rm:pointer(), rv:pointer(),
              Bn, Cn, S, 0.1, 1e-5, 0, act)   -- evaluation
          res[#res + 1] = y:to("cpu")
        end
      end
      if not backward then
        res[#res + 1], res[#res + 2] = rm:to("cpu"), rv:to("cpu")
      else
        local dy = new(host(195 + i, Bn, Cn * S, false))
        local dx, dg, db = new(T.new({ Bn * Cn * S })), new(T.new({ Cn })), new(T.new({ Cn }))
        k(x:pointer(), gamma:pointer(), dy:pointer(), mean:pointer(), invstd:pointer(), dx:pointer(),
          dg:pointer(), db:pointer(), Bn, Cn, S)
        res[#res + 1], res[#res + 2], res[#res + 3] = dx:to("cpu"), dg:to("cpu"), db:to("cpu")
        k(x:pointer(), gamma:pointer(), dy:pointer(), mean:pointer(), invstd:pointer(), nil,
          dg:pointer(), db:pointer(), Bn, Cn, S)   -- the first layer's call: no dx
        res[#res + 1] = dg:to("cpu")
      end
    end
    return res
  end }
end

local rows7 = ffi.new("int64_t[7]", { 3, 10, 0, 7, 9, 1, 5 })
local perm = ffi.new("int64_t[11]", { 4, 2, 9, 0, 10, 1, 7, 3, 8, 5, 6 })

local CASES = {
  ["vec.fill"] = vec_case(function(k, x, _, n) k(x:pointer(), n, -2.5) end),
  ["vec.scale"] = vec_case(function(k, x, _, n) k(x:pointer(), n, -0.37) end),
  ["vec.axpy"] = vec_case(function(k, x, y, n) k(x:pointer(), y:pointer(), n, 0.73) end),
  ["vec.add"] = vec_case(function(k, x, y, n) k(x:pointer(), x:pointer(), y:pointer(), n) end),
  ["vec.sub"] = vec_case(function(k, x, y, n) k(x:pointer(), y:pointer(), x:pointer(), n) end),
  ["vec.mul"] = vec_case(function(k, x, y, n) k(x:pointer(), x:pointer(), y:pointer(), n) end),
  ["vec.copy"] = vec_case(function(k, x, y, n) k(x:pointer(), y:pointer(), n - 7) end),
  -- reductions (a number): finite inputs over many CPU chunks and device blocks, 1e-12 relative
  -- (double sums in two orders), and NaN / ±inf inputs (NaN on both)
  ["vec.sum"] = red_case(function(k, x) return k(x:pointer(), #x) end),
  ["vec.norm2"] = red_case(function(k, x) return k(x:pointer(), #x) end),
  ["vec.dot"] = red_case(function(k, x, y) return k(x:pointer(), y:pointer(), #x) end),
  ["vec.sqdist"] = red_case(function(k, x, y) return k(x:pointer(), y:pointer(), #x) end),
  -- per-row norms and squared distances to a vector (host doubles), as the reductions
  ["vec.rows_norm2"] = { tol = 1e-12, run = function(k, new)
    local res, out = {}, ffi.new("double[?]", N)
    for _, special in ipairs({ false, true }) do
      k(new(input(12, N, 3 * D, special)):pointer(), N, 3 * D, out)
      for i = 0, N - 1 do res[#res + 1] = out[i] end
    end
    return res
  end },
  ["vec.rows_sqdist"] = { tol = 1e-12, run = function(k, new)
    local res, out = {}, ffi.new("double[?]", N)
    local v = new(input(14, 1, 3 * D, false))
    for _, special in ipairs({ false, true }) do
      k(new(input(13, N, 3 * D, special)):pointer(), N, 3 * D, v:pointer(), out)
      for i = 0, N - 1 do res[#res + 1] = out[i] end
    end
    return res
  end },
  ["vec.rows_mean"] = { tol = 0, run = function(k, new)
    local G, out = new(input(8, N, D, true)), new(T.new({ D }))
    k(G:pointer(), N, D, out:pointer())
    local G1, out1 = new(input(9, 1, D, false)), new(T.new({ D }))
    k(G1:pointer(), 1, D, out1:pointer())
    return { out:to("cpu"), out1:to("cpu") }
  end },
  ["vec.rows_std"] = { tol = 0, run = function(k, new)
    local G, res = new(input(10, N, D, true)), {}
    local mean = new(input(11, 1, D, false))
    for ddof = 0, 1 do
      local out = new(T.new({ D }))
      k(G:pointer(), N, D, mean:pointer(), ddof, out:pointer())
      res[#res + 1] = out:to("cpu")
    end
    return res
  end },
  ["vec.gemm"] = gemm_case(),
  ["nn.linear_forward"] = { tol = 1e-4, run = function(k, new)
    local x, W, b = new(few(30, LB, LIN)), new(few(31, LIN, LOUT)), new(few(32, 1, LOUT))
    local y1, y2 = new(T.new({ LB, LOUT })), new(T.new({ LB, LOUT }))
    k(x:pointer(), W:pointer(), b:pointer(), y1:pointer(), LB, LIN, LOUT)
    k(x:pointer(), W:pointer(), nil, y2:pointer(), LB, LIN, LOUT)
    return { y1:to("cpu"), y2:to("cpu") }
  end },
  ["nn.linear_backward"] = { tol = 1e-4, run = function(k, new)
    local x, W, dy = new(few(33, LB, LIN)), new(few(34, LIN, LOUT)), new(few(35, LB, LOUT))
    local dx, dW, db = new(T.new({ LB, LIN })), new(T.new({ LIN, LOUT })), new(T.new({ LOUT }))
    k(x:pointer(), W:pointer(), dy:pointer(), dx:pointer(), dW:pointer(), db:pointer(), LB, LIN, LOUT)
    local dW2 = new(T.new({ LIN, LOUT }))   -- the first layer's call: no dx, no db
    k(x:pointer(), W:pointer(), dy:pointer(), nil, dW2:pointer(), nil, LB, LIN, LOUT)
    return { dx:to("cpu"), dW:to("cpu"), db:to("cpu"), dW2:to("cpu") }
  end },
  -- tanh and sigmoid use the device's tanhf/expf (a few ulp); relu is within that too
  ["nn.act_forward"] = act_case(1e-6, function(k, new, act)
    local x = new(host(60 + act, 5, 1000, true))
    local y = new(T.new({ 5, 1000 }))
    k(act, x:pointer(), y:pointer(), 5000)
    k(act, x:pointer(), x:pointer(), 5000)   -- in place
    return { y, x }
  end),
  ["nn.act_backward"] = act_case(0, function(k, new, act)
    local y, dy = new(host(63 + act, 5, 1000, true)), new(host(66 + act, 5, 1000, true))
    local dx = new(T.new({ 5, 1000 }))
    k(act, y:pointer(), dy:pointer(), dx:pointer(), 5000)
    k(act, y:pointer(), dy:pointer(), dy:pointer(), 5000)   -- in place
    return { dx, dy }
  end),
  ["nn.bias_act"] = { tol = 1e-6, run = function(k, new)
    local res = {}
    for act = -1, 2 do
      local x, b = new(host(70, 6, 7 * 9, true)), new(host(71, 1, 7, true))
      k(x:pointer(), b:pointer(), 6, 7, 9, act)        -- (B, C, S) images
      local xd, bd = new(host(72, 6, 7, true)), new(host(73, 1, 7, true))
      k(xd:pointer(), bd:pointer(), 6, 7, 1, act)      -- dense
      local xn = new(host(74, 6, 7, true))
      k(xn:pointer(), nil, 6, 7, 1, act)               -- no bias
      res[#res + 1], res[#res + 2], res[#res + 3] = x:to("cpu"), xd:to("cpu"), xn:to("cpu")
    end
    return res
  end },
  -- exp and log in double on both sides (1 ulp apart at most), so the loss agrees to ~1e-15
  ["nn.softmax_xent"] = { tol = 1e-6, run = function(k, new)
    local res, loss = {}, ffi.new("double[1]")
    for _, special in ipairs({ false, true }) do
      local z, y = new(host(80, 17, 10, special)), new(labels(81, 17, 10))
      local dz = new(T.new({ 17, 10 }))
      k(z:pointer(), y:pointer(), 17, 10, loss, dz:pointer())
      res[#res + 1], res[#res + 2] = dz:to("cpu"), loss[0]
      k(z:pointer(), y:pointer(), 17, 10, loss, nil)   -- the loss alone
      res[#res + 1] = loss[0]
    end
    return res
  end },
  ["nn.eval_batch"] = { tol = 1e-12, run = function(k, new)
    local res, ls, cr = {}, ffi.new("double[1]"), ffi.new("size_t[1]")
    for _, special in ipairs({ false, true }) do
      local z, y = new(host(82, 40, 10, special)), new(labels(83, 40, 10))
      for r = 0, 39, 5 do   -- rows whose label is the max, some of them tied with class 0
        local zh = z:to("cpu")
        zh.ptr[r * 10 + y:to("cpu").ptr[r]] = 50
        if r % 10 == 0 then zh.ptr[r * 10] = 50 end
        z = new(zh)
      end
      k(z:pointer(), y:pointer(), 40, 10, ls, cr)
      res[#res + 1], res[#res + 2] = ls[0], tonumber(cr[0])
    end
    return res
  end },
  ["nn.conv2d_forward"] = conv_case(false),
  ["nn.conv2d_backward"] = conv_case(true),
  ["nn.maxpool_forward"] = pool_case("max", false),
  ["nn.maxpool_backward"] = pool_case("max", true),
  ["nn.avgpool_forward"] = pool_case("avg", false),
  ["nn.avgpool_backward"] = pool_case("avg", true),
  ["nn.batchnorm_forward"] = bn_case(false),
  ["nn.batchnorm_backward"] = bn_case(true),
  ["nn.add_act"] = act_case(1e-6, function(k, new, act)
    local a, b = new(host(175 + act, 5, 1000, true)), new(host(178 + act, 5, 1000, true))
    local y = new(T.new({ 5, 1000 }))
    k(a:pointer(), b:pointer(), y:pointer(), 5000, act)
    k(a:pointer(), b:pointer(), b:pointer(), 5000, -1)   -- in place, no activation
    return { y, b }
  end),
  ["nn.dropout_forward"] = dropout_case(),
  ["nn.dropout_backward"] = { tol = 0, run = function(k, new)
    local dy, mask = new(input(170, 5, 1000, true)), new(host(171, 5, 1000, false))
    local dx = new(T.new({ 5000 }))
    k(dy:pointer(), mask:pointer(), dx:pointer(), 5000)
    k(dy:pointer(), mask:pointer(), dy:pointer(), 5000)   -- in place
    return { dx:to("cpu"), dy:to("cpu") }
  end },
  ["optim.sgd"] = optim_case(0, {}, function(k, th, g, s, d) k(th:pointer(), g:pointer(), d, 0.1) end),
  ["optim.momentum"] = optim_case(2, {}, function(k, th, g, s, d)
    k(th:pointer(), s[1]:pointer(), g:pointer(), d, 0.1, 0.9, 0)
    k(th:pointer(), s[2]:pointer(), g:pointer(), d, 0.1, 0.9, 1)   -- Nesterov
  end),
  ["optim.adam"] = optim_case(2, { false, true }, function(k, th, g, s, d, t)
    k(th:pointer(), s[1]:pointer(), s[2]:pointer(), g:pointer(), d, 0.01, 0.9, 0.999, 1e-8, t)
  end),
  ["optim.adagrad"] = optim_case(1, { true }, function(k, th, g, s, d)
    k(th:pointer(), s[1]:pointer(), g:pointer(), d, 0.1)
  end),
  ["optim.adadelta"] = optim_case(2, { true, true }, function(k, th, g, s, d)
    k(th:pointer(), s[1]:pointer(), s[2]:pointer(), g:pointer(), d, 1.0, 0.95, 1e-6)
  end),
  ["optim.rmsprop"] = optim_case(4, { true, false, false, 4 }, function(k, th, g, s, d)
    k(th:pointer(), s[1]:pointer(), nil, s[3]:pointer(), g:pointer(), d, 0.01, 0.9, 0.5, 1e-10)
    k(th:pointer(), s[4]:pointer(), s[2]:pointer(), s[3]:pointer(), g:pointer(), d, 0.01, 0.9, 0.5, 1e-10)
  end),
  ["optim.l1"] = reg_case(),
  ["optim.l2"] = reg_case(),
  ["gar.average"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, o) end),
  ["gar.average_nan"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, o) end),
  ["gar.median"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, o) end),
  ["gar.trimmed_mean"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, Fb, o) end),
  ["gar.phocas"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, Fb, o) end),
  ["gar.meamed"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, N - Fb, o) end),
  ["gar.rows_meamed"] = gar_case(nil, 0, function(k, g, o) return k(g, D, rows7, 7, 3, o) end),
  ["gar.rows_average"] = gar_case(nil, 0, function(k, g, o) return k(g, N, D, rows7, 7, o) end),
  ["gar.sqdist"] = gar_case(nil, 1e-5, function(k, g, _, h) return k(g, N, D, h.D) end),
  ["gar.multi_krum"] = gar_case(nil, 0, function(k, g, o, h) return k(g, N, D, Fb, N - Fb, o, h.sel) end),
  ["gar.bulyan"] = gar_case(nil, 0, function(k, g, o, h) return k(g, N, D, Fb, o, h.sel) end),
  ["gar.cge"] = gar_case(nil, 0, function(k, g, o, h) return k(g, N, D, Fb, o, h.sel) end),
  ["gar.mda"] = gar_case(nil, 0, function(k, g, o, h) return k(g, N, D, Fb, 1e6, o, h.sel) end),
  ["gar.geometric_median"] = gar_case(nil, 1e-4, function(k, g, o, h)
    return k(g, N, D, 0.1, 8, 1e-6, o, h.it) end, 1),
  ["gar.centered_clipping"] = gar_case(nil, 1e-4, function(k, g, o) return k(g, N, D, 1.0, 3, o) end),
  ["gar.nnm"] = gar_case(N, 0, function(k, g, o) return k(g, N, D, Fb, o) end),
  ["gar.bucketing"] = gar_case(6, 0, function(k, g, o) return k(g, N, D, 2, perm, o) end),
  ["gar.clipping"] = gar_case(N, 1e-6, function(k, g, o) return k(g, N, D, 3.0, o) end),
  ["gar.arc"] = gar_case(N, 1e-6, function(k, g, o) return k(g, N, D, Fb, o) end),
}

-- a result list: tensors compared elementwise, numbers within tol (relative, NaN = NaN);
-- iteration counts within it_slack
local function compare(got, want, tol, what, it_got, it_want, it_slack)
  if it_want then
    assert.is_true(math.abs(it_got - it_want) <= (it_slack or 0),
                   string.format("%s: iterations: device %d cpu %d", what, it_got, it_want))
  end
  assert.are.equal(#want, #got, what .. ": result count")
  for i = 1, #want do
    local a, b = got[i], want[i]
    if T.is_tensor(b) then
      local diff = first_diff(a, b, tol)
      assert.is_nil(diff, what .. ": " .. tostring(diff))
    else
      local same = a == b or (a ~= a and b ~= b) or (math.abs(a - b) <= tol * math.max(1, math.abs(b)))
      assert.is_true(same, string.format("%s: value %d: device %.10g cpu %.10g", what, i, a, b))
    end
  end
end

describe("agt.backend", function()
  it("has the CPU always, with vector ops, rule kernels, layers, optimizers and attack helpers", function()
    local cpu = B.get("cpu")
    assert.is_true((cpu:available()))
    assert.are.equal("cpu", B.list()[1])
    for _, op in ipairs({ "vec.axpy", "vec.sum", "gar.median", "gar.multi_krum", "nn.linear_forward",
                          "nn.softmax_xent", "optim.adam", "optim.sgd", "attack.minmax" }) do
      assert.is_true(cpu:has(op), op)
    end
    assert.are.equal(B.get("cpu"), B.of(T.new({ 2 })))
  end)

  it("gives every op of a device backend a CPU twin of the same name, and a case here", function()
    local cpu = B.get("cpu")
    for _, name in ipairs(devices) do
      local ops = B.get(name):ops()
      assert.is_true(#ops > 0, name .. " has no ops")
      for _, op in ipairs(ops) do
        assert.is_true(cpu:has(op), op .. " on " .. name .. " has no CPU twin")
        assert.is_table(CASES[op], op .. " on " .. name .. " has no case in spec/backend_spec.lua")
      end
    end
  end)

  it("refuses an op a backend lacks, naming op and device, and unknown devices", function()
    assert.has_error(function() B.get("cuda"):op("attack.minmax") end,
                     "attack.minmax has no kernel on cuda (attack there: none); copy the tensors with :to(\"cpu\")")
    assert.has_error(function() B.get("cpu"):op("vec.nope") end)
    assert.has_error(function() B.get("tpu") end)
    assert.has_error(function() T.new({ 2 }, "f32", "tpu") end)
    assert.are.equal(B.get("cuda"), B.get("gpu"))
  end)

  it("builds a rule for the GPU with no earlier call, or says why there is no device", function()
    local ok, why = B.get("cuda"):available()
    local built, r = pcall(A.new, "median", 5, 1, nil, { backend = "gpu" })
    if ok then
      assert.is_true(built, tostring(r))
      assert.are.equal(B.get("cuda"), r.backend)
    else
      assert.is_false(built)
      assert.are.equal("aggregator 'median' on cuda: " .. tostring(why), r:gsub("^[^:]*:%d+: ", ""))
    end
    assert.has_error(function() A.new("median", 5, 1, nil, { backend = "tpu" }) end,
                     "aggregator: unknown backend 'tpu' (known: cpu, cuda, gpu)")
  end)

  local case_names = {}
  for op in pairs(CASES) do case_names[#case_names + 1] = op end
  table.sort(case_names)

  it("runs every case on the CPU, twice to the same bits (the cases themselves are sound)", function()
    local cpu = B.get("cpu")
    for _, op in ipairs(case_names) do
      local okr, a, ia = pcall(CASES[op].run, cpu:op(op), function(h) return h:clone() end, cpu)
      assert(okr, op .. ": " .. tostring(a))
      local b, ib = CASES[op].run(cpu:op(op), function(h) return h:to("cpu") end, cpu)
      compare(a, b, 0, op .. " on cpu", ia, ib, 0)
    end
  end)

  for _, op in ipairs(case_names) do
    local case = CASES[op]
    on_devices(op .. " matches its CPU twin", function(be)
      local k = be:op(op)
      local want, iw = case.run(B.get("cpu"):op(op), function(h) return h:clone() end, B.get("cpu"))
      local got, ig = case.run(k, function(h) return h:to(be.name) end, be)
      compare(got, want, case.tol, op .. " on " .. be.name, ig, iw, case.it_slack)
    end)
  end

  -- cuDNN where libcudnn.so.9 is found: the same convolutions through it and through im2col
  for _, dir in ipairs({ "forward", "backward" }) do
    on_devices("conv2d " .. dir .. " through cuDNN equals im2col + cuBLAS (1e-4)", function(be)
      local line, cudnn = be.conv_path()
      assert.is_nil(line:find("\n"), "one line")
      if not cudnn then pending(line) return end
      local op = "nn.conv2d_" .. dir
      local case = CASES[op]
      local function run() return case.run(be:op(op), function(h) return h:to(be.name) end, be) end
      local i0, c0 = be.conv_calls()
      local with = run()
      local i1, c1 = be.conv_calls()
      be.use_cudnn(false)
      local ok, without = pcall(run)
      assert.matches("im2col", (be.conv_path()))
      be.use_cudnn(true)
      assert(ok, without)
      local i2, c2 = be.conv_calls()
      -- cuDNN took the symmetric geometries (in float32 those of 256 output pixels or more: the
      -- last two), and with it off im2col took them all
      assert.is_true(c1 - c0 >= 3, string.format("passes through cuDNN: %d (im2col %d)", c1 - c0, i1 - i0))
      assert.are.equal(c1, c2)
      assert.is_true(i2 - i1 >= c1 - c0, "with cuDNN off, im2col runs every pass")
      compare(with, without, case.tol, op .. ": cuDNN against im2col")
    end)
  end

  -- ---- models and optimizers through the backend (agt.nn, agt.optim) ----------------------
  local nn = require("agt.nn")
  local O = require("agt.optim")

  local function fashion_mnist()
    return require("agt.plugins").load("experiments", "fashion-mnist", "experiment").model(nn)
  end

  -- a batch like Fashion-MNIST's: pixels in [0, 1), about half of them 0 (the CPU's dense layer
  -- then takes its sparse path, the device's GEMM does not), labels of every class
  local function batch(seed, B)
    local x = R.new(seed, "batch"):uniform(T.new({ B, 1, 28, 28 }), -1, 1)
    local p = x.ptr
    for i = 0, #x - 1 do if p[i] < 0 then p[i] = 0 end end
    return x, labels(seed, B, 10)
  end

  local function max_abs(t)
    local m, p = 0, t.ptr
    for i = 0, #t - 1 do m = math.max(m, math.abs(p[i])) end
    return m
  end

  -- |a − b| <= tol · max|b| everywhere (a and b host tensors; NaN only where the other has NaN)
  local function close(a, b, tol, what)
    local pa, pb, scale = a.ptr, b.ptr, max_abs(b)
    for i = 0, #b - 1 do
      local x, y = pa[i], pb[i]
      local ok = (x ~= x and y ~= y) or math.abs(x - y) <= tol * scale
      assert.is_true(ok, string.format("%s: value %d: device %.9g cpu %.9g (scale %.3g)", what, i, x, y, scale))
    end
  end

  it("refuses a model whose batch is on another device than theta", function()
    -- stand-ins that only say they are on cuda:0: both refusals come before any memory is touched
    local function standin(n)
      local g = ffi.new("agt_lua_tensor")
      g.dev, g.dix, g.n, g.nd, g.dims[0], g.dt = 1, 0, n, 1, n, 0
      return g
    end
    local m = fashion_mnist()
    local x = batch(1, 4)
    assert.has_error(function() m:forward(standin(m.d), x, 4) end,
                     'x is on cpu but theta on cuda: copy it with :to("cuda")')
  end)

  it("has a device kernel for every layer of agt.nn", function()
    for _, op in ipairs({ "linear", "conv2d", "maxpool", "avgpool", "dropout", "act" }) do
      assert.is_true(B.get("cuda"):has("nn." .. op .. "_forward"), op)
      assert.is_true(B.get("cuda"):has("nn." .. op .. "_backward"), op)
    end
  end)

  -- cnnet (conv 5x5, ReLU folded into max-pool 3x3/2, dense layers) and a model with the other
  -- layers (avg-pool, a strided VALID conv, sigmoid, dropout drawing from a stream): loss,
  -- gradient, logits and evaluation with θ and the batch on the device against the CPU's
  local function cifar_batch(seed, Bn)
    return R.new(seed, "cifar"):uniform(T.new({ Bn, 3, 32, 32 }), 0, 1), labels(seed, Bn, 10)
  end

  local function models()
    local cnnet = require("agt.plugins").load("experiments", "cnnet", "experiment").model(nn)
    local other = nn.sequential({ 3, 32, 32 }, {
      nn.conv2d(8, { kernel = 3, stride = 2, padding = "VALID" }), nn.sigmoid(),
      nn.avgpool({ kernel = 3, stride = 2, padding = "SAME" }), nn.conv2d(6, { kernel = 3 }), nn.relu(),
      nn.flatten(), nn.dropout(0.4), nn.linear(10),
    })
    local resnet = nn.sequential({ 3, 32, 32 }, {
      nn.conv2d(8, { kernel = 3, padding = 1, bias = false }), nn.batchnorm(), nn.relu(),
      nn.residual({ nn.conv2d(8, { kernel = 3, padding = 1, bias = false }), nn.batchnorm(), nn.relu(),
                    nn.conv2d(8, { kernel = 3, padding = 1, bias = false }), nn.batchnorm() }),
      nn.residual({ nn.conv2d(16, { kernel = 3, stride = 2, padding = 1, bias = false }), nn.batchnorm(), nn.relu(),
                    nn.conv2d(16, { kernel = 3, padding = 1, bias = false }), nn.batchnorm() },
                  { nn.conv2d(16, { kernel = 1, stride = 2, padding = "VALID", bias = false }), nn.batchnorm() }),
      nn.avgpool({ kernel = 16 }), nn.flatten(), nn.linear(10),
    })
    return { cnnet = cnnet, other = other, resnet = resnet }
  end

  on_devices("cnnet's, a residual batch-norm model's and a model's loss, gradient and evaluation with theta and the batch on the device follow the CPU's (cuDNN and im2col)", function(be)
    local _, has_cudnn = be.conv_path()
    local ok, err = pcall(function()
      for _, path in ipairs(has_cudnn and { "cudnn", "im2col" } or { "im2col" }) do
        be.use_cudnn(path == "cudnn")
        for name0, m in pairs(models()) do
          local name = name0 .. " (" .. path .. ")"
          local theta = m:init(T.new({ m.d }), R.new(11, "init"))
          local x, y = cifar_batch(12, 16)
          local g, gd = T.new({ m.d }), T.new({ m.d }, "f32", be.name)
          local rc, rd = R.new(13, "drop"), R.new(13, "drop")
          local loss = m:loss_grad(theta, x, y, 16, g, rc)
          local loss_d = m:loss_grad(theta:to(be.name), x:to(be.name), y:to(be.name), 16, gd, rd)
          assert.is_true(math.abs(loss_d - loss) <= 1e-5 * loss, string.format("%s loss: device %.9g cpu %.9g", name, loss_d, loss))
          close(gd:to("cpu"), g, 1e-4, name .. " gradient")
          assert.are.equal(rc:state(), rd:state(), name .. ": the dropout stream after the step")
          -- batch norm: each device's running statistics recalibrated at θ on the batch first
          if m:has_batchnorm() then m:recalibrate(theta, x, 16, 1) end
          local sc, nc = m:eval_batch(theta, x, y, 16)
          if m:has_batchnorm() then m:recalibrate(theta:to(be.name), x:to(be.name), 16, 1) end
          local sd, nd = m:eval_batch(theta:to(be.name), x:to(be.name), y:to(be.name), 16)
          assert.is_true(math.abs(sd - sc) <= 1e-5 * sc, string.format("%s evaluation loss: device %.9g cpu %.9g", name, sd, sc))
          assert.are.equal(nc, nd, name .. " evaluation: correct predictions")
        end
      end
    end)
    be.use_cudnn(true)
    assert(ok, err)
  end)

  -- --gpu-math fp32 is bit-repeatable: the same pass twice gives the same loss and gradient bits
  -- on either path (cuDNN's forward, dx as a forward convolution, dW by im2col + SGEMM; im2col)
  on_devices("the models' loss and gradient on the device are the same bits run twice (cuDNN and im2col, fp32)", function(be)
    local _, has_cudnn = be.conv_path()
    local ok, err = pcall(function()
      for _, path in ipairs(has_cudnn and { "cudnn", "im2col" } or { "im2col" }) do
        be.use_cudnn(path == "cudnn")
        for name0, m in pairs(models()) do
          local name = name0 .. " (" .. path .. ")"
          local theta = m:init(T.new({ m.d }), R.new(21, "init")):to(be.name)
          local x, y = cifar_batch(22, 16)
          x, y = x:to(be.name), y:to(be.name)
          local g1, g2 = T.new({ m.d }, "f32", be.name), T.new({ m.d }, "f32", be.name)
          local l1 = m:loss_grad(theta, x, y, 16, g1, R.new(23, "drop"))
          local l2 = m:loss_grad(theta, x, y, 16, g2, R.new(23, "drop"))
          assert.are.equal(l1, l2, name .. " loss")
          local diff = first_diff(g1:to("cpu"), g2:to("cpu"))
          assert.is_nil(diff, name .. " gradient: " .. tostring(diff))
        end
      end
    end)
    be.use_cudnn(true)
    assert(ok, err)
  end)

  -- --gpu-math's opt-in modes: finite inputs, tolerances of their arithmetic (TF32 rounds the
  -- products' inputs to 10-bit mantissas; fp32-fast's Winograd and FFT round differently)
  on_devices("--gpu-math tf32 and fp32-fast: the models' loss and gradient follow the CPU's to their tolerances, the path line names the mode, fp32 comes back", function(be)
    local _, has_cudnn = be.conv_path()
    local ok, err = pcall(function()
      for _, mode in ipairs({ { "tf32", 1e-2 }, { "fp32-fast", 1e-2 } }) do
        for _, path in ipairs(has_cudnn and { "cudnn", "im2col" } or { "im2col" }) do
          be.use_cudnn(path == "cudnn")
          be.set_math(mode[1])
          assert.are.equal(mode[1], be.math())
          if path == "cudnn" then assert.matches(mode[1], (be.conv_path()), 1, true) end
          for name0, m in pairs(models()) do
            local name = name0 .. " (" .. path .. ", " .. mode[1] .. ")"
            local theta = m:init(T.new({ m.d }), R.new(11, "init"))
            local x, y = cifar_batch(12, 16)
            local g, gd = T.new({ m.d }), T.new({ m.d }, "f32", be.name)
            local loss = m:loss_grad(theta, x, y, 16, g, R.new(13, "drop"))
            local loss_d = m:loss_grad(theta:to(be.name), x:to(be.name), y:to(be.name), 16, gd, R.new(13, "drop"))
            assert.is_true(math.abs(loss_d - loss) <= mode[2] * loss, string.format("%s loss: device %.9g cpu %.9g", name, loss_d, loss))
            close(gd:to("cpu"), g, mode[2], name .. " gradient")
          end
        end
      end
    end)
    be.set_math("fp32")
    be.use_cudnn(true)
    assert(ok, err)
    assert.are.equal("fp32", be.math())
    assert.has_error(function() be.set_math("bf16") end, "gpu math must be fp32, tf32 or fp32-fast, got bf16")
  end)

  on_devices("fashion-mnist's loss and gradient with theta and the batch on the device equal the CPU's", function(be)
    local m = fashion_mnist()
    local theta = m:init(T.new({ m.d }), R.new(5, "init"))
    local x, y = batch(6, 64)
    local g = T.new({ m.d })
    local loss = m:loss_grad(theta, x, y, 64, g)
    local gd = T.new({ m.d }, "f32", be.name)
    local loss_d = m:loss_grad(theta:to(be.name), x:to(be.name), y:to(be.name), 64, gd)
    assert.is_true(math.abs(loss_d - loss) <= 1e-5 * loss, string.format("loss: device %.9g cpu %.9g", loss_d, loss))
    close(gd:to("cpu"), g, 1e-4, "gradient")
    local lc, ld = T.new({ 64, 10 }), T.new({ 64, 10 })   -- forward's logits: a pointer on its device
    ffi.copy(lc.data, m:forward(theta, x, 64), 64 * 10 * 4)
    be.read(ld.data, m:forward(theta:to(be.name), x:to(be.name), 64), 64 * 10 * 4)
    close(ld, lc, 1e-5, "logits")
    local sc, nc = m:eval_batch(theta, x, y, 64)
    local sd, nd = m:eval_batch(theta:to(be.name), x:to(be.name), y:to(be.name), 64)
    assert.is_true(math.abs(sd - sc) <= 1e-5 * sc, string.format("evaluation loss: device %.9g cpu %.9g", sd, sc))
    assert.are.equal(nc, nd, "evaluation: correct predictions")
  end)

  -- (SGD with momentum: an update linear in the gradient, so the runs stay as close as the
  -- gradients; Adam's g/√v would magnify rounding where a coordinate's gradient is near 0)
  on_devices("ten training steps on the device (loss, gradient, momentum SGD through agt.optim) follow the CPU's", function(be)
    local m = fashion_mnist()
    local theta = m:init(T.new({ m.d }), R.new(7, "init"))
    local td = theta:to(be.name)
    local sgd = { "momentum:0.9" }
    local oc, od = O.new("sgd", sgd, m.d), O.new("sgd", sgd, m.d)
    local g, gd = T.new({ m.d }), T.new({ m.d }, "f32", be.name)
    for step = 1, 10 do
      local x, y = batch(100 + step, 32)
      local lc = m:loss_grad(theta, x, y, 32, g)
      local ld = m:loss_grad(td, x:to(be.name), y:to(be.name), 32, gd)
      assert.is_true(math.abs(ld - lc) <= 1e-4 * lc, string.format("step %d loss: device %.9g cpu %.9g", step, ld, lc))
      oc:step(theta, g, 0.05)
      od:step(td, gd, 0.05)
    end
    assert.are.equal(be.name, od.slots.momentum.device:match("^%a+"))
    close(td:to("cpu"), theta, 1e-4, "theta after 10 steps")
    -- the optimizer's state reads back from the device, and a restored state goes back there
    local st = od:state()
    local o2 = O.new("sgd", sgd, m.d)
    o2:set_state(st)
    assert.are.equal(st, o2:state())
  end)

  on_devices("agt.optim's updates on the device are the CPU's bit for bit", function(be)
    for _, c in ipairs({ { "sgd", {} }, { "sgd", { "momentum:0.9", "nesterov:true" } }, { "adam", {} },
                         { "adagrad", {} }, { "adadelta", {} }, { "rmsprop", { "rmsprop-centered:true", "rmsprop-momentum:0.5" } } }) do
      local th, g = input(90, 4, 1031, false), input(91, 4, 1031, false)
      local thd, gd = th:to(be.name), g:to(be.name)
      local oc, od = O.new(c[1], c[2], #th), O.new(c[1], c[2], #th)
      for _ = 1, 3 do
        oc:step(th, g, 0.01)
        od:step(thd, gd, 0.01)
      end
      local diff = first_diff(thd:to("cpu"), th, 0)
      assert.is_nil(diff, c[1] .. " " .. table.concat(c[2], ",") .. ": " .. tostring(diff))
      assert.are.equal(oc:state(), od:state(), c[1] .. ": slots")
    end
  end)

  on_devices("every rule and chain, with G on the device, gives the CPU's result and rows", function(be)
    -- finite G, as gpu_spec's test of every rule through agt.aggregators (the kernels' cases
    -- above and spec/gpu_spec.lua hold them to the CPU on NaN and ±inf)
    local n, f = 25, 5
    local G = input(950, n, D, false)
    local Gd = G:to(be.name)
    local tol = { ["geometric-median"] = 1e-4, ["centered-clipping"] = 1e-4, clipping = 1e-6, arc = 1e-6 }
    local ran = 0
    for _, name in ipairs(A.list()) do
      local def = A.find(name).def
      local spec = def.kind == "pre" and (name .. ",average") or name
      local okc, cpu = pcall(A.new, spec, n, f, {})
      if okc then
        local out_c = T.new({ D })
        local out_d = T.new({ D }, "f32", be.name)
        local ic = cpu:aggregate(G, out_c, { rng = R.new(3, "b") }) or {}
        local r = A.new(spec, n, f, {})   -- no backend: it follows G to the device
        local id = r:aggregate(Gd, out_d, { rng = R.new(3, "b") }) or {}
        for _, buf in pairs(r.buffers) do assert.are.equal(Gd.device, buf.device, spec .. ": a buffer off G's device") end
        local diff = first_diff(out_d:to("cpu"), out_c, tol[name] or 0)
        assert.is_nil(diff, spec .. ": " .. tostring(diff))
        assert.are.same(ic.selected, id.selected, spec .. ": selected rows")
        ran = ran + 1
      end
    end
    assert.is_true(ran >= 17, "rules run: " .. ran)
    local r = A.new("nnm,bucketing,krum", n, f, { s = 2 })
    assert.has_error(function() r:aggregate(Gd, T.new({ D })) end)   -- G and out on two devices
  end)
end)

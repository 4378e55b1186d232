-- agt.tensor — the Lua class over engine tensors (src/tensor.h), on the CPU or a CUDA device.
--
-- Each Lua tensor owns exactly one engine reference, attached with ffi.gc at construction;
-- :free() detaches the finalizer and releases it at once. The data pointer is cached
-- (contiguous views never move). Indexing is 1-based over the flattened elements; :row(i)
-- gives a view of row i. t.data is the untyped host pointer, t.ptr the typed one (0-based and
-- unchecked, unless AGT_DEBUG=1: see "Debug mode" below), t.raw the typed one never checked.
--
-- Devices: T.new(shape, dtype, "cuda") allocates on the GPU; t.device is "cpu" or "cuda:k";
-- t:to("cuda") / t:to("cpu") are explicit copies (nothing moves implicitly), t:copy(src) copies
-- between any two devices. A CUDA tensor's memory is not host memory: its elements, t.data,
-- t.ptr and the ops that need host memory raise an error that says to call :to("cpu"); its
-- device pointer is t:pointer(), for kernels. Vector ops are found in the tensor's backend
-- (agt.backend): an op the device lacks is an error naming op and device, and an op on tensors
-- of two devices is an error naming both. t:pin() page-locks a host tensor's storage once (for
-- asynchronous uploads); the lock goes with the storage.
local F = require("agt.ffi")
local B = require("agt.backend")
local ffi, C = F.ffi, F.C
local check = F.check

local T = {}
local Tensor = {}

local dtypes = { f32 = C.AGT_F32, i32 = C.AGT_I32, u8 = C.AGT_U8, i64 = C.AGT_I64 }
local dtype_names = { [tonumber(C.AGT_F32)] = "f32", [tonumber(C.AGT_I32)] = "i32",
                      [tonumber(C.AGT_U8)] = "u8", [tonumber(C.AGT_I64)] = "i64" }
local ptr_types = { f32 = ffi.typeof("float *"), i32 = ffi.typeof("int32_t *"),
                    u8 = ffi.typeof("uint8_t *"), i64 = ffi.typeof("int64_t *") }
local shape_t = ffi.typeof("int64_t[8]")
local handle_out = ffi.typeof("agt_tensor *[1]")
local CPU = tonumber(C.AGT_DEV_CPU)

-- The Lua-side tensor is a cdata struct (so # and indexing work under LuaJIT's Lua 5.1
-- semantics): the owned engine handle, its data pointer (on its device), the element count,
-- the device and its ordinal, and the shape.
ffi.cdef([[
typedef struct agt_lua_tensor {
  agt_tensor *handle;
  void *addr;
  double n;
  int32_t dt;
  int32_t nd;
  int32_t dev;
  int32_t dix;
  double dims[8];
} agt_lua_tensor;
]])
local lua_tensor_t = ffi.typeof("agt_lua_tensor")

local function finalize(t)
  if t.handle ~= nil then
    C.agt_tensor_release(t.handle)
    t.handle = nil
  end
end

-- Wraps an owned handle into a Lua tensor.
local function wrap(h)
  local t = lua_tensor_t()
  t.handle = h
  t.addr = C.agt_tensor_data(h)
  t.n = tonumber(C.agt_tensor_numel(h))
  t.dt = C.agt_tensor_dtype(h)
  t.nd = C.agt_tensor_ndim(h)
  t.dev = C.agt_tensor_device(h)
  t.dix = C.agt_tensor_device_index(h)
  for i = 0, t.nd - 1 do t.dims[i] = tonumber(C.agt_tensor_dim(h, i)) end
  return ffi.gc(t, finalize)
end

local function device_of(t)
  if t.dev == CPU then return "cpu" end
  return "cuda:" .. t.dix
end

-- Raises unless t is in host memory; what names the access.
local function need_host(t, what, level)
  if t.dev ~= CPU then
    error(string.format("%s needs host memory, but the tensor is on %s: call :to(\"cpu\") first",
                        what, device_of(t)), (level or 2) + 1)
  end
end

-- Raises when t was freed: :free() drops the handle and zeroes the element count.
local function need_live(t, what, level)
  if t.handle == nil and t.n == 0 and t.nd == 0 then
    error(string.format("%s: the tensor was freed (t:free()); use a live tensor", what), (level or 2) + 1)
  end
end

-- The 0-based offset of element k (1-based), or an error naming k: NaN, a fraction or a value
-- outside 1..n would read or write outside the tensor.
local function offset_of(t, k)
  if k ~= k or k ~= math.floor(k) then
    error(string.format("index %s is not an integer", tostring(k)), 3)
  end
  if k < 1 or k > t.n then error(string.format("index %d out of range 1..%d", k, t.n), 3) end
  return k - 1
end

local function shape_of(shape, what)
  if type(shape) == "number" then shape = { shape } end
  if type(shape) ~= "table" then error((what or "shape") .. " must be a table of sizes", 3) end
  if #shape > 8 then error("a tensor has at most 8 dimensions, got " .. #shape, 3) end
  local s, keys = shape_t(), 0
  for _ in pairs(shape) do keys = keys + 1 end
  if keys ~= #shape then
    error((what or "shape") .. " must be a list of sizes with no holes (a nil dimension?)", 3)
  end
  for i, v in ipairs(shape) do
    if type(v) ~= "number" or v < 0 or v ~= math.floor(v) or v == math.huge then
      error(string.format("dimension %d must be a non-negative integer, got %s%s", i,
                          type(v) == "number" and "" or type(v) .. " ", tostring(v)), 3)
    end
    if v > 2 ^ 53 then   -- past exact integers (and int64_t): the engine would see another size
      error(string.format("dimension %d is too large (%.17g)", i, v), 3)
    end
    s[i - 1] = v
  end
  return s, #shape
end

-- device: "cpu" (default), "cuda" (or "gpu", "cuda:k" for the device the engine drives).
function T.new(shape, dtype, device)
  dtype = dtype or "f32"
  local dt = dtypes[dtype]
  if not dt then error("unknown dtype '" .. tostring(dtype) .. "' (expected f32, i32, u8 or i64)", 2) end
  local be = B.get(device or "cpu", 2)
  local s, nd = shape_of(shape)
  local out = handle_out()
  check(F.alloc_call(C.agt_tensor_new_on, be.device, dt, nd, s, out), 2)
  return wrap(out[0])
end

-- A tensor over memory someone else owns (ptr: a host or device address, e.g. of a NumPy or
-- PyTorch array), never freed by agt: the memory must outlive the tensor and its views.
function T.wrap(ptr, shape, dtype, device)
  dtype = dtype or "f32"
  local dt = dtypes[dtype]
  if not dt then error("unknown dtype '" .. tostring(dtype) .. "' (expected f32, i32, u8 or i64)", 2) end
  local be = B.get(device or "cpu", 2)
  local s, nd = shape_of(shape)
  local room
  ptr, room = T.unchecked(ptr, "T.wrap", 2)
  if room then
    local n = 1
    for i = 0, nd - 1 do n = n * tonumber(s[i]) end
    if n > room then
      error(string.format("T.wrap: a shape of %d values over a pointer that reaches %d (AGT_DEBUG checks)",
                          n, room), 2)
    end
  end
  local out = handle_out()
  check(C.agt_tensor_wrap(be.device, ffi.cast("void *", ptr), dt, nd, s, out), 2)
  return wrap(out[0])
end

function T.is_tensor(x) return ffi.istype(lua_tensor_t, x) end

function T.from_table(tbl, shape, dtype)
  if type(shape) == "string" then shape, dtype = nil, shape end
  local flat = {}
  local function flatten(v)
    if type(v) == "table" then for _, x in ipairs(v) do flatten(x) end
    else flat[#flat + 1] = v end
  end
  flatten(tbl)
  if not shape then
    shape = {}
    local v = tbl
    while type(v) == "table" do shape[#shape + 1] = #v; v = v[1] end
  end
  for i, v in ipairs(flat) do
    if type(v) ~= "number" and type(v) ~= "boolean" then
      error(string.format("value %d of the table is a %s, not a number", i, type(v)), 2)
    end
  end
  local t = T.new(shape, dtype)
  if t.n ~= #flat then error(string.format("table has %d values, shape wants %d", #flat, t.n), 2) end
  local p = t.raw
  for i = 1, #flat do p[i - 1] = flat[i] end
  return t
end

-- Debug mode (AGT_DEBUG=1 in the environment, read once at load): t.ptr and an attack's
-- self:row(c, i) give a checked pointer instead of a raw one. It is a Lua table, not a cdata,
-- so that nothing converts it to an address silently (an FFI struct would pass its own
-- address to a void * or float * argument): p[k] reads and writes check that k is an integer
-- inside the tensor (or the row), p + k / p - k move it (checked when used, as in C), p - q
-- is an element count, == and < compare addresses. Code that hands a pointer to C uses the
-- raw one: t.raw or t:pointer() (the engine does), or T.unchecked(p) of a checked one; the
-- documented functions that take pointers (an attack's self:write, a rule's self:kernel,
-- T.wrap) accept both. Unset, t.ptr is the raw pointer, as t.raw, and none of this runs.
local DEBUG = (os.getenv("AGT_DEBUG") or "") ~= "" and os.getenv("AGT_DEBUG") ~= "0"
T.debug = DEBUG

local Checked = {}

-- A checked pointer at element `at` of a window of `len` elements starting at `base` (a raw
-- typed pointer); in messages, what names the pointer ("t.ptr", "self:row(c, 3)") and of
-- the window ("a tensor", "c.G's row 3").
local function checked(base, len, at, what, dtype, of)
  return setmetatable({ base = base, len = len, at = at, what = what, dtype = dtype, of = of }, Checked)
end

local function is_checked(x) return getmetatable(x) == Checked end
T.is_checked = is_checked

-- The element index of p[k] in p's window, or an error at the caller's line naming k and the
-- window's size (level 3: the line indexing p).
local function name(p)
  if p.at == 0 then return p.what end
  return string.format("(%s %s %d)", p.what, p.at < 0 and "-" or "+", math.abs(p.at))
end

local function checked_index(p, k)
  if type(k) == "cdata" then k = tonumber(k) end
  if type(k) ~= "number" then
    error(string.format("%s[%s]: a pointer is indexed by a number, got %s (AGT_DEBUG checks)",
                        name(p), tostring(k), type(k)), 3)
  end
  if k ~= k or k ~= math.floor(k) or k == math.huge or k == -math.huge then
    error(string.format("%s[%s]: the index is not an integer (AGT_DEBUG checks)", name(p), tostring(k)), 3)
  end
  local i = p.at + k
  if i < 0 or i >= p.len then
    error(string.format("%s[%d]: %sout of range of %s of %d %s values (valid indices%s %d..%d; "
                        .. "AGT_DEBUG checks)", name(p), k, p.at == 0 and "index " or
                        string.format("element %d, ", i), p.of, p.len, p.dtype,
                        p.at == 0 and "" or " here", -p.at, p.len - p.at - 1), 3)
  end
  return i
end

function Checked.__index(p, k)
  local v = p.base[checked_index(p, k)]
  return v
end

function Checked.__newindex(p, k, v)
  local i = checked_index(p, k)
  if type(v) ~= "number" and type(v) ~= "cdata" and type(v) ~= "boolean" then
    error(string.format("%s[%s] = %s: a value must be a number (AGT_DEBUG checks)", name(p),
                        tostring(k), type(v)), 2)
  end
  p.base[i] = v
end

local function moved(p, k, sign)
  if type(k) == "cdata" then k = tonumber(k) end
  if type(k) ~= "number" or k ~= math.floor(k) then
    error(string.format("%s %s %s: a pointer moves by an integer (AGT_DEBUG checks)", name(p),
                        sign > 0 and "+" or "-", tostring(k)), 3)
  end
  return checked(p.base, p.len, p.at + sign * k, p.what, p.dtype, p.of)
end

function Checked.__add(a, b)
  if is_checked(a) then return moved(a, b, 1) end
  return moved(b, a, 1)
end

function Checked.__sub(a, b)
  if is_checked(b) then
    if not is_checked(a) or a.base ~= b.base then
      error("p - q: both must point into one tensor (AGT_DEBUG checks)", 2)
    end
    return a.at - b.at
  end
  return moved(a, b, -1)
end

-- The raw address of a checked pointer (for ==, < and C).
local function address(p) return p.base + p.at end

function Checked.__eq(a, b) return address(a) == address(b) end
function Checked.__lt(a, b) return address(a) < address(b) end
function Checked.__le(a, b) return address(a) <= address(b) end
function Checked.__tostring(p)
  return string.format("checked pointer (AGT_DEBUG) %s + %d into %s of %d %s values", p.what,
                       p.at, p.of, p.len, p.dtype)
end

-- The raw pointer of x (a checked pointer or already raw) and, for a checked one, how many
-- elements it may reach from where it points (nil for a raw pointer: unknown). A checked
-- pointer outside its window is an error naming what (level as for error()).
function T.unchecked(x, what, level)
  if not is_checked(x) then return x, nil end
  if x.at < 0 or x.at > x.len then
    error(string.format("%s: the pointer is %d elements %s %s of %d values (AGT_DEBUG checks)",
                        what or "pointer", x.at < 0 and -x.at or x.at - x.len,
                        x.at < 0 and "before" or "past the end of", x.of, x.len), (level or 1) + 1)
  end
  return address(x), x.len - x.at
end

-- A checked pointer over n elements at the raw pointer p (DEBUG), or p itself; what and of
-- as above.
function T.checked(p, n, what, of, dtype)
  if not DEBUG then return p end
  return checked(p, n, 0, what, dtype or "f32", of)
end

-- The typed host pointer of a getter named what (errors at the line reading t.<what>).
local function host_pointer(self, what)
  need_host(self, what, 4)
  need_live(self, what, 4)
  return ffi.cast(ptr_types[dtype_names[self.dt]], self.addr)
end

local getters = {
  -- the typed host pointer, never checked: what engine code passes to C
  raw = function(self)
    local p = host_pointer(self, "t.raw")
    return p
  end,
  ptr = function(self)
    local p = host_pointer(self, "t.ptr")
    return p
  end,
  data = function(self)
    need_host(self, "t.data", 3)
    need_live(self, "t.data", 3)
    return self.addr
  end,
  device = device_of,
  pinned = function(self) return self.handle ~= nil and C.agt_tensor_pinned(self.handle) == 1 end,
  dtype = function(self) return dtype_names[self.dt] end,
  shape = function(self)
    local s = {}
    for i = 0, self.nd - 1 do s[i + 1] = self.dims[i] end
    return s
  end,
}
if DEBUG then
  getters.ptr = function(self)
    local p = host_pointer(self, "t.ptr")
    return checked(p, self.n, 0, "t.ptr", dtype_names[self.dt], "a tensor")
  end
end

function Tensor.__index(self, k)
  if type(k) == "number" then
    need_host(self, "element access", 2)
    local v = ffi.cast(ptr_types[dtype_names[self.dt]], self.addr)[offset_of(self, k)]
    return self.dt == C.AGT_I64 and tonumber(v) or v
  end
  local g = getters[k]
  if g then
    local v = g(self)   -- not a tail call: a getter's error names the caller's line
    return v
  end
  return Tensor[k]
end

function Tensor.__newindex(self, k, v)
  if type(k) ~= "number" then error("cannot set field '" .. tostring(k) .. "' of a tensor", 2) end
  need_host(self, "element access", 2)
  if type(v) ~= "number" and type(v) ~= "cdata" and type(v) ~= "boolean" then
    error(string.format("a tensor element must be a number, got %s", type(v)), 2)
  end
  ffi.cast(ptr_types[dtype_names[self.dt]], self.addr)[offset_of(self, k)] = v
end

function Tensor.__len(self) return self.n end

local function is_int(x) return type(x) == "number" and x == math.floor(x) end

function Tensor:dim() return self.nd end
function Tensor:size(i)
  if i == nil then return self.shape end
  if not is_int(i) then error("size(i): i must be an integer, got " .. tostring(i), 2) end
  if i < 1 or i > self.nd then return nil end
  return self.dims[i - 1]
end
function Tensor:numel() return self.n end

function Tensor:free()
  if self.handle ~= nil then
    ffi.gc(self, nil)
    C.agt_tensor_release(self.handle)
    self.handle = nil
    self.addr = nil
    self.n = 0
    self.nd = 0
  end
end

local function view(self, shape, offset, what)
  need_live(self, what, 3)
  local s, nd = shape_of(shape)
  local out = handle_out()
  check(C.agt_tensor_view(self.handle, nd, s, offset, out), 3)
  return wrap(out[0])
end

function Tensor:reshape(shape)
  need_live(self, "reshape")
  shape_of(shape)
  local n = 1
  for _, v in ipairs(shape) do n = n * v end
  if n ~= self.n then
    error(string.format("reshape to %d elements of a tensor of %d", n, self.n), 2)
  end
  return view(self, shape, 0, "reshape")
end

local function row_size(self)
  local w = 1
  for i = 2, #self.shape do w = w * self.shape[i] end
  return w
end

function Tensor:row(i)
  need_live(self, "row")
  if #self.shape < 2 then error("row() needs a tensor of at least 2 dimensions", 2) end
  if type(i) ~= "number" or i ~= math.floor(i) or i < 1 or i > self.shape[1] then
    error(string.format("row %s out of range 1..%d", tostring(i), self.shape[1]), 2)
  end
  local rest = { unpack(self.shape, 2) }
  return view(self, rest, (i - 1) * row_size(self), "row")
end

function Tensor:narrow(i, k)
  need_live(self, "narrow")
  local rows = self.shape[1] or 0
  if not is_int(i) or not is_int(k) then
    error(string.format("narrow(%s, %s): start and count must be integers", tostring(i), tostring(k)), 2)
  end
  if i < 1 or k < 0 or i + k - 1 > rows then
    error(string.format("narrow(%d, %d) out of range of %d rows", i, k, rows), 2)
  end
  local shape = { unpack(self.shape) }
  shape[1] = k
  return view(self, shape, (i - 1) * row_size(self), "narrow")
end

-- The typed data pointer on the tensor's own device (a device pointer for CUDA): for kernels.
function Tensor:pointer()
  need_live(self, "pointer")
  return ffi.cast(ptr_types[dtype_names[self.dt]], self.addr)
end

-- t:to("cuda" | "cpu"): a copy on that device (a copy even when t is there already).
function Tensor:to(device)
  need_live(self, "to")
  local be = B.get(device, 2)
  local out = handle_out()
  check(F.alloc_call(C.agt_tensor_to, self.handle, be.device, out), 2)
  return wrap(out[0])
end

-- Page-locks the host storage (once for all its views) so that uploads from it are
-- asynchronous: true, or nil and the reason (no device; the copies are then synchronous).
function Tensor:pin()
  need_host(self, "pin", 2)
  need_live(self, "pin")
  return F.try(C.agt_tensor_pin(self.handle))
end

local function need_f32(self, what)
  if self.dtype ~= "f32" then error(what .. " needs an f32 tensor, got " .. self.dtype, 3) end
end

-- b: a live tensor of a's size (level: of the method's caller, as for error(), default 3).
local function same_size(a, b, what, level)
  level = level or 3
  if not T.is_tensor(b) then error(what .. " needs a tensor argument", level) end
  need_live(b, what .. " (its argument)", level)
  if a.n ~= b.n then error(string.format("%s: sizes differ (%d and %d)", what, a.n, b.n), level) end
end

-- The f32 tensor argument of an f32 op, of self's size (an i32/u8/i64 one would be read as
-- floats, a u8 one past its end).
local function f32_arg(a, b, what)
  same_size(a, b, what, 4)
  if b.dt ~= C.AGT_F32 then error(what .. " needs an f32 tensor argument, got " .. b.dtype, 3) end
end

local function need_number(v, what)
  if type(v) ~= "number" then error(string.format("%s needs a number, got %s", what, type(v)), 3) end
end

-- The kernel of op for self's device, after checking that u (if given) is on the same one.
local function kernel(self, op, u)
  if u and u.dev ~= self.dev then
    error(string.format("vec.%s: tensors on two devices (%s and %s); copy one with :to()", op,
                        device_of(self), device_of(u)), 3)
  end
  local k = B.of(self):op("vec." .. op, 3)
  need_live(self, op, 3)
  if u then need_live(u, op .. " (its argument)", 3) end
  return k
end

function Tensor:fill(v)
  if type(v) ~= "number" and type(v) ~= "boolean" and type(v) ~= "cdata" then
    error("fill needs a number, got " .. type(v), 2)
  end
  if self.dtype == "f32" then kernel(self, "fill")(self.addr, self.n, v)
  else
    need_host(self, "fill of a " .. self.dtype .. " tensor")
    local p = self.raw
    for i = 0, self.n - 1 do p[i] = v end
  end
  return self
end
function Tensor:zero() return self:fill(0) end

-- Copies src's values into self; the two may be on different devices (an explicit copy).
function Tensor:copy(src)
  need_live(self, "copy")
  same_size(self, src, "copy")
  if src.dt ~= self.dt then
    error(string.format("copy: dtypes differ (%s from %s); convert explicitly", self.dtype, src.dtype), 2)
  end
  check(C.agt_tensor_copy(self.handle, src.handle), 2)
  return self
end

function Tensor:clone()
  need_live(self, "clone")
  local out = handle_out()
  check(F.alloc_call(C.agt_tensor_clone, self.handle, out), 2)
  return wrap(out[0])
end

function Tensor:totable()
  need_host(self, "totable")
  need_live(self, "totable")
  local t, p = {}, self.raw
  for i = 0, self.n - 1 do t[i + 1] = tonumber(p[i]) end
  return t
end

function Tensor:sum()
  if self.dtype == "f32" then return kernel(self, "sum")(self.addr, self.n) end
  need_host(self, "sum of a " .. self.dtype .. " tensor")
  local s, p = 0, self.raw
  for i = 0, self.n - 1 do s = s + tonumber(p[i]) end
  return s
end
function Tensor:mean() return self:sum() / self.n end
function Tensor:norm(p)
  need_f32(self, "norm")
  if p == 1 then return kernel(self, "norm1")(self.addr, self.n) end
  if p == math.huge then return kernel(self, "norminf")(self.addr, self.n) end
  return kernel(self, "norm2")(self.addr, self.n)
end
function Tensor:dot(u)
  need_f32(self, "dot"); f32_arg(self, u, "dot")
  return kernel(self, "dot", u)(self.addr, u.addr, self.n)
end
function Tensor:max() need_f32(self, "max"); return kernel(self, "max")(self.addr, self.n) end
function Tensor:min() need_f32(self, "min"); return kernel(self, "min")(self.addr, self.n) end
function Tensor:scale(a) need_f32(self, "scale"); need_number(a, "scale"); kernel(self, "scale")(self.addr, self.n, a); return self end
function Tensor:axpy(a, x)
  need_f32(self, "axpy"); f32_arg(self, x, "axpy"); need_number(a, "axpy")
  kernel(self, "axpy", x)(self.addr, x.addr, self.n, a)
  return self
end
function Tensor:add(u)
  need_f32(self, "add"); f32_arg(self, u, "add")
  kernel(self, "add", u)(self.addr, self.addr, u.addr, self.n)
  return self
end
function Tensor:sub(u)
  need_f32(self, "sub"); f32_arg(self, u, "sub")
  kernel(self, "sub", u)(self.addr, self.addr, u.addr, self.n)
  return self
end
function Tensor:mul(u)
  need_f32(self, "mul"); f32_arg(self, u, "mul")
  kernel(self, "mul", u)(self.addr, self.addr, u.addr, self.n)
  return self
end

-- Operators, for the REPL and scripts: + - * between two f32 tensors of one size (element-wise)
-- or a tensor and a number, / by a number, unary minus. Each makes a new tensor on the
-- operands' device through the same kernels as add, sub, mul and scale.
local function plus_number(t, x)
  local c = t:clone():fill(x)
  t:add(c)
  c:free()
  return t
end
function Tensor.__add(a, b)
  if type(a) == "number" then a, b = b, a end
  if type(b) == "number" then return plus_number(a:clone(), b) end
  return a:clone():add(b)
end
function Tensor.__sub(a, b)
  if type(a) == "number" then return plus_number(b:clone():scale(-1), a) end
  if type(b) == "number" then return plus_number(a:clone(), -b) end
  return a:clone():sub(b)
end
function Tensor.__mul(a, b)
  if type(a) == "number" then a, b = b, a end
  if type(b) == "number" then return a:clone():scale(b) end
  return a:clone():mul(b)
end
function Tensor.__div(a, b)
  if type(b) ~= "number" then error("tensor / x: x must be a number (for element-wise division, no op yet)", 2) end
  return a:clone():scale(1 / b)
end
function Tensor.__unm(a) return a:clone():scale(-1) end

function Tensor:allclose(u, rtol, atol)
  need_f32(self, "allclose"); f32_arg(self, u, "allclose")
  if rtol ~= nil then need_number(rtol, "allclose's rtol") end
  if atol ~= nil then need_number(atol, "allclose's atol") end
  return kernel(self, "allclose", u)(self.addr, u.addr, self.n, rtol or 1e-5, atol or 1e-8) == 1
end

function Tensor:__tostring()
  if self.handle == nil then return "agt.tensor(freed)" end
  local dims = table.concat(self.shape, "x")
  dims = dims == "" and "scalar" or dims
  if self.dev ~= CPU then
    return string.format("agt.tensor(%s, %s, %s)", self.dtype, dims, device_of(self))
  end
  local parts = {}
  local shown = math.min(self.n, 8)
  for i = 0, shown - 1 do parts[#parts + 1] = string.format("%.6g", tonumber(self.raw[i])) end
  if self.n > shown then parts[#parts + 1] = "..." end
  local s = string.format("agt.tensor(%s, %s, cpu) [%s]", self.dtype, dims, table.concat(parts, ", "))
  if self.dtype == "f32" and self.n > 0 then
    local bad = tonumber(C.agt_vec_count_nonfinite(self.raw, self.n))
    if bad == 0 then
      s = s .. string.format(" min=%.6g max=%.6g mean=%.6g", self:min(), self:max(), self:mean())
    else
      s = s .. string.format(" (%d non-finite)", bad)
    end
  end
  return s
end

-- The backend of the tensors of one op, after checking they are all on one device.
local function backend_of(what, first, ...)
  for _, t in ipairs({ ... }) do
    if t.dev ~= first.dev then
      error(string.format("%s: tensors on two devices (%s and %s); copy one with :to()", what,
                          device_of(first), device_of(t)), 3)
    end
  end
  return B.of(first)
end

function T.gemm(ta, tb, alpha, A, Bm, beta, Cm)
  if type(alpha) ~= "number" or type(beta) ~= "number" then
    error(string.format("gemm: alpha and beta must be numbers, got %s and %s", type(alpha), type(beta)), 2)
  end
  for _, x in ipairs({ A, Bm, Cm }) do
    if not T.is_tensor(x) or x.dtype ~= "f32" or #x.shape ~= 2 then error("gemm needs 2-D f32 tensors", 2) end
  end
  local k_gemm = backend_of("gemm", A, Bm, Cm):op("vec.gemm", 2)
  local m = ta and A.shape[2] or A.shape[1]
  local k = ta and A.shape[1] or A.shape[2]
  local kb = tb and Bm.shape[2] or Bm.shape[1]
  local n = tb and Bm.shape[1] or Bm.shape[2]
  if k ~= kb or Cm.shape[1] ~= m or Cm.shape[2] ~= n then
    error(string.format("gemm shapes do not match: op(A) %dx%d, op(B) %dx%d, C %dx%d",
                        m, k, kb, n, Cm.shape[1], Cm.shape[2]), 2)
  end
  k_gemm(ta and 1 or 0, tb and 1 or 0, m, n, k, alpha, A:pointer(), A.shape[2], Bm:pointer(),
         Bm.shape[2], beta, Cm:pointer(), Cm.shape[2])
  return Cm
end

-- The row reductions check every tensor against G (n×d): out and mean hold d f32 values.
local function rows_args(what, G, ...)
  if not T.is_tensor(G) or G.dtype ~= "f32" or #G.shape ~= 2 then
    error(what .. ": G must be a 2-D f32 tensor", 3)
  end
  for _, t in ipairs({ ... }) do
    if not T.is_tensor(t) or t.dtype ~= "f32" then error(what .. ": needs f32 tensors", 3) end
  end
  local be = backend_of(what, G, ...)
  need_live(G, what, 3)
  local d = G.shape[2]
  for _, t in ipairs({ ... }) do
    need_live(t, what, 3)
    if t.n ~= d then
      error(string.format("%s: a tensor of %d values for %d columns of G", what, t.n, d), 3)
    end
  end
  return be, G.shape[1], d
end

function T.rows_mean(G, out)
  local be, n, d = rows_args("rows_mean", G, out)
  be:op("vec.rows_mean", 2)(G:pointer(), n, d, out:pointer())
  return out
end

function T.rows_std(G, mean, ddof, out)
  local be, n, d = rows_args("rows_std", G, mean, out)
  ddof = ddof or 0
  if ddof ~= 0 and ddof ~= 1 then error("rows_std: ddof must be 0 or 1, got " .. tostring(ddof), 2) end
  be:op("vec.rows_std", 2)(G:pointer(), n, d, mean:pointer(), ddof, out:pointer())
  return out
end

ffi.metatype(lua_tensor_t, Tensor)
T.Tensor = Tensor
return T

-- agt.png — a small RGB canvas and a PNG encoder, for plots without any image library.
--
-- The canvas is a w × h × 3 byte buffer (row-major, top row first). Lines are drawn with a
-- coverage-weighted brush (anti-aliased, any width), text with a built-in 3×5 pixel font scaled
-- by an integer factor (digits, letters shown upper-case, and common punctuation). encode()
-- writes a PNG: the signature, IHDR (8-bit RGB, no interlace), one IDAT holding the zlib stream
-- of the rows (each led by filter byte 0) and IEND, each chunk with its CRC-32. zlib comes from
-- the agt binary itself (it links zlib) or, under a plain LuaJIT, from libz.
local ffi = require("ffi")

local M = {}

pcall(ffi.cdef, [[
  unsigned long compressBound(unsigned long sourceLen);
  int compress2(uint8_t *dest, unsigned long *destLen, const uint8_t *source,
                unsigned long sourceLen, int level);
  unsigned long crc32(unsigned long crc, const uint8_t *buf, unsigned int len);
  int uncompress(uint8_t *dest, unsigned long *destLen, const uint8_t *source,
                 unsigned long sourceLen);
]])

local zlib
local function z()
  if zlib then return zlib end
  if pcall(function() return ffi.C.compress2 end) then zlib = ffi.C else zlib = ffi.load("z") end
  return zlib
end

local Canvas = {}
Canvas.__index = Canvas

-- A canvas filled with bg ({r, g, b}, default white).
function M.canvas(w, h, bg)
  bg = bg or { 255, 255, 255 }
  local buf = ffi.new("uint8_t[?]", w * h * 3)
  for i = 0, w * h - 1 do
    buf[3 * i], buf[3 * i + 1], buf[3 * i + 2] = bg[1], bg[2], bg[3]
  end
  return setmetatable({ w = w, h = h, buf = buf }, Canvas)
end

-- Blends colour c over pixel (x, y) with opacity a in [0, 1]; outside pixels are ignored.
function Canvas:blend(x, y, c, a)
  x, y = math.floor(x), math.floor(y)
  if x < 0 or y < 0 or x >= self.w or y >= self.h or a <= 0 then return end
  if a > 1 then a = 1 end
  local i = 3 * (y * self.w + x)
  local b = self.buf
  b[i] = b[i] + (c[1] - b[i]) * a + 0.5
  b[i + 1] = b[i + 1] + (c[2] - b[i + 1]) * a + 0.5
  b[i + 2] = b[i + 2] + (c[3] - b[i + 2]) * a + 0.5
end

function Canvas:get(x, y)
  local i = 3 * (y * self.w + x)
  return self.buf[i], self.buf[i + 1], self.buf[i + 2]
end

function Canvas:rect(x0, y0, x1, y1, c)
  for y = math.max(0, math.floor(y0)), math.min(self.h - 1, math.floor(y1)) do
    for x = math.max(0, math.floor(x0)), math.min(self.w - 1, math.floor(x1)) do
      self:blend(x, y, c, 1)
    end
  end
end

-- Anti-aliased segment of width `width` pixels: each pixel near the segment is blended by how
-- far its centre lies from it (1 inside the half-width, fading to 0 over one pixel).
function Canvas:line(x0, y0, x1, y1, c, width)
  local hw = (width or 1) / 2
  local minx = math.floor(math.min(x0, x1) - hw - 1)
  local maxx = math.ceil(math.max(x0, x1) + hw + 1)
  local miny = math.floor(math.min(y0, y1) - hw - 1)
  local maxy = math.ceil(math.max(y0, y1) + hw + 1)
  local dx, dy = x1 - x0, y1 - y0
  local len2 = dx * dx + dy * dy
  for y = math.max(0, miny), math.min(self.h - 1, maxy) do
    for x = math.max(0, minx), math.min(self.w - 1, maxx) do
      local px, py = x + 0.5, y + 0.5
      local t = len2 > 0 and ((px - x0) * dx + (py - y0) * dy) / len2 or 0
      if t < 0 then t = 0 elseif t > 1 then t = 1 end
      local ex, ey = px - (x0 + t * dx), py - (y0 + t * dy)
      local dist = math.sqrt(ex * ex + ey * ey)
      local a = hw + 0.5 - dist
      if a > 0 then self:blend(x, y, c, a) end
    end
  end
end

-- 3×5 font: each glyph is five rows of three bits ('#' set).
local glyphs = {
  ["0"] = "###|#.#|#.#|#.#|###", ["1"] = ".#.|##.|.#.|.#.|###", ["2"] = "###|..#|###|#..|###",
  ["3"] = "###|..#|.##|..#|###", ["4"] = "#.#|#.#|###|..#|..#", ["5"] = "###|#..|###|..#|###",
  ["6"] = "###|#..|###|#.#|###", ["7"] = "###|..#|.#.|.#.|.#.", ["8"] = "###|#.#|###|#.#|###",
  ["9"] = "###|#.#|###|..#|###",
  A = ".#.|#.#|###|#.#|#.#", B = "##.|#.#|##.|#.#|##.", C = ".##|#..|#..|#..|.##",
  D = "##.|#.#|#.#|#.#|##.", E = "###|#..|##.|#..|###", F = "###|#..|##.|#..|#..",
  G = ".##|#..|#.#|#.#|.##", H = "#.#|#.#|###|#.#|#.#", I = "###|.#.|.#.|.#.|###",
  J = "..#|..#|..#|#.#|.#.", K = "#.#|#.#|##.|#.#|#.#", L = "#..|#..|#..|#..|###",
  M = "#.#|###|###|#.#|#.#", N = "##.|#.#|#.#|#.#|#.#", O = ".#.|#.#|#.#|#.#|.#.",
  P = "##.|#.#|##.|#..|#..", Q = ".#.|#.#|#.#|##.|.##", R = "##.|#.#|##.|#.#|#.#",
  S = ".##|#..|.#.|..#|##.", T = "###|.#.|.#.|.#.|.#.", U = "#.#|#.#|#.#|#.#|###",
  V = "#.#|#.#|#.#|#.#|.#.", W = "#.#|#.#|###|###|#.#", X = "#.#|#.#|.#.|#.#|#.#",
  Y = "#.#|#.#|.#.|.#.|.#.", Z = "###|..#|.#.|#..|###",
  ["."] = "...|...|...|...|.#.", ["-"] = "...|...|###|...|...", [":"] = "...|.#.|...|.#.|...",
  [","] = "...|...|...|.#.|#..", ["/"] = "..#|..#|.#.|#..|#..", ["("] = ".#.|#..|#..|#..|.#.",
  [")"] = ".#.|..#|..#|..#|.#.", ["%"] = "#.#|..#|.#.|#..|#.#", ["="] = "...|###|...|###|...",
  ["+"] = "...|.#.|###|.#.|...", ["_"] = "...|...|...|...|###", [" "] = "...|...|...|...|...",
  ["["] = "##.|#..|#..|#..|##.", ["]"] = ".##|..#|..#|..#|.##", ["<"] = "..#|.#.|#..|.#.|..#",
  [">"] = "#..|.#.|..#|.#.|#..", ["*"] = "...|#.#|.#.|#.#|...", ["'"] = ".#.|.#.|...|...|...",
  ["?"] = "##.|..#|.#.|...|.#.", ["#"] = "#.#|###|#.#|###|#.#", ["!"] = ".#.|.#.|.#.|...|.#.",
}
local bits = {}
for ch, g in pairs(glyphs) do
  local rows = {}
  for row in g:gmatch("[^|]+") do rows[#rows + 1] = row end
  bits[ch] = rows
end

-- Width in pixels of text at scale s (4 columns per glyph: 3 + 1 space).
function M.text_width(text, s)
  return #text * 4 * (s or 2) - (s or 2)
end

-- Draws text with its top-left corner at (x, y); unknown characters draw as '?'.
function Canvas:text(x, y, text, c, s)
  s = s or 2
  text = text:upper()
  for k = 1, #text do
    local rows = bits[text:sub(k, k)] or bits["?"]
    local gx = x + (k - 1) * 4 * s
    for r = 1, 5 do
      for col = 1, 3 do
        if rows[r]:sub(col, col) == "#" then
          self:rect(gx + (col - 1) * s, y + (r - 1) * s, gx + col * s - 1, y + r * s - 1, c)
        end
      end
    end
  end
end

-- Vertical text (bottom to top), for a y-axis label; (x, y) is the bottom-left corner.
function Canvas:text_up(x, y, text, c, s)
  s = s or 2
  text = text:upper()
  for k = 1, #text do
    local rows = bits[text:sub(k, k)] or bits["?"]
    local gy = y - (k - 1) * 4 * s
    for r = 1, 5 do
      for col = 1, 3 do
        if rows[r]:sub(col, col) == "#" then
          self:rect(x + (r - 1) * s, gy - col * s + 1, x + r * s - 1, gy - (col - 1) * s, c)
        end
      end
    end
  end
end

---------------------------------------------------------------------------------------------------
-- PNG encoding

local function be32(x)
  return string.char(math.floor(x / 16777216) % 256, math.floor(x / 65536) % 256,
                     math.floor(x / 256) % 256, x % 256)
end

function M.crc32(s)
  return tonumber(z().crc32(0, ffi.cast("const uint8_t *", s), #s))
end

local function chunk(kind, data)
  return be32(#data) .. kind .. data .. be32(M.crc32(kind .. data))
end

-- zlib stream of s (level 6).
function M.deflate(s)
  local Z = z()
  local cap = Z.compressBound(#s)
  local out = ffi.new("uint8_t[?]", cap)
  local len = ffi.new("unsigned long[1]", cap)
  local rc = Z.compress2(out, len, ffi.cast("const uint8_t *", s), #s, 6)
  if rc ~= 0 then error("zlib compress2 failed with code " .. rc) end
  return ffi.string(out, len[0])
end

-- Inverse of deflate, for checks: size is the exact decompressed size.
function M.inflate(s, size)
  local out = ffi.new("uint8_t[?]", size)
  local len = ffi.new("unsigned long[1]", size)
  local rc = z().uncompress(out, len, ffi.cast("const uint8_t *", s), #s)
  if rc ~= 0 then return nil, "zlib uncompress failed with code " .. rc end
  return ffi.string(out, len[0])
end

function Canvas:encode()
  local w, h = self.w, self.h
  local stride = w * 3 + 1
  local raw = ffi.new("uint8_t[?]", stride * h)
  for y = 0, h - 1 do
    raw[y * stride] = 0   -- filter type None
    ffi.copy(raw + y * stride + 1, self.buf + y * w * 3, w * 3)
  end
  local ihdr = be32(w) .. be32(h) .. string.char(8, 2, 0, 0, 0)
  return "\137PNG\r\n\26\n" .. chunk("IHDR", ihdr) ..
         chunk("IDAT", M.deflate(ffi.string(raw, stride * h))) .. chunk("IEND", "")
end

function Canvas:save(path)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(self:encode())
  f:close()
  return true
end

-- Parses a PNG's chunks (for checks): { width, height, depth, color, chunks = {type...},
-- crc_ok = bool, data = raw IDAT bytes concatenated }.
function M.inspect(s)
  if s:sub(1, 8) ~= "\137PNG\r\n\26\n" then return nil, "not a PNG signature" end
  local function get32(i)
    local a, b, c, d = s:byte(i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
  end
  local info, i, idat = { chunks = {}, crc_ok = true }, 9, {}
  while i <= #s do
    if i + 11 > #s then return nil, "truncated chunk" end
    local len, kind = get32(i), s:sub(i + 4, i + 7)
    local data = s:sub(i + 8, i + 7 + len)
    if #data ~= len then return nil, "truncated chunk data" end
    if get32(i + 8 + len) ~= M.crc32(kind .. data) then info.crc_ok = false end
    info.chunks[#info.chunks + 1] = kind
    if kind == "IHDR" then
      info.width, info.height = get32(i + 8), get32(i + 12)
      info.depth, info.color = data:byte(9), data:byte(10)
    elseif kind == "IDAT" then
      idat[#idat + 1] = data
    end
    i = i + 12 + len
  end
  info.data = table.concat(idat)
  return info
end

return M

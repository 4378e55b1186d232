-- agt.draw — a drawing canvas over cairo, bound through LuaJIT's FFI: one set of drawing calls
-- written to PNG, SVG or PDF (what agt.plot's curves and heat maps are drawn with).
--
-- FFI rather than a C module: only plotting needs cairo, so the engine builds and trains
-- without it; libcairo.so.2 is opened at the first drawing, and a machine without it gets an
-- error naming the package instead of a failing `agt`. Text uses cairo's toy font API (the
-- "sans-serif" face through fontconfig, antialiased, in the case it is given). Coordinates are
-- in pixels for PNG and in user units for SVG (px) and PDF (pt), top-left origin; a text's y is
-- its baseline. Colours are {r, g, b} bytes. Each canvas owns one cairo context and surface,
-- attached with ffi.gc; :close() writes the file and detaches them.
local ffi = require("ffi")
local bit = require("bit")

local M = {}

ffi.cdef [[
typedef struct _cairo cairo_t;
typedef struct _cairo_surface cairo_surface_t;
typedef struct { double x_bearing, y_bearing, width, height, x_advance, y_advance; } cairo_text_extents_t;
cairo_surface_t *cairo_image_surface_create(int format, int width, int height);
cairo_surface_t *cairo_svg_surface_create(const char *filename, double width, double height);
void cairo_svg_surface_set_document_unit(cairo_surface_t *surface, int unit);
cairo_surface_t *cairo_pdf_surface_create(const char *filename, double width, double height);
int cairo_surface_write_to_png(cairo_surface_t *surface, const char *filename);
void cairo_surface_finish(cairo_surface_t *surface);
int cairo_surface_status(cairo_surface_t *surface);
void cairo_surface_destroy(cairo_surface_t *surface);
cairo_t *cairo_create(cairo_surface_t *target);
int cairo_status(cairo_t *cr);
void cairo_destroy(cairo_t *cr);
const char *cairo_status_to_string(int status);
void cairo_save(cairo_t *cr);
void cairo_restore(cairo_t *cr);
void cairo_set_source_rgba(cairo_t *cr, double r, double g, double b, double a);
void cairo_set_line_width(cairo_t *cr, double width);
void cairo_set_line_join(cairo_t *cr, int join);
void cairo_set_line_cap(cairo_t *cr, int cap);
void cairo_move_to(cairo_t *cr, double x, double y);
void cairo_line_to(cairo_t *cr, double x, double y);
void cairo_rectangle(cairo_t *cr, double x, double y, double w, double h);
void cairo_arc(cairo_t *cr, double xc, double yc, double radius, double angle1, double angle2);
void cairo_close_path(cairo_t *cr);
void cairo_new_path(cairo_t *cr);
void cairo_stroke(cairo_t *cr);
void cairo_fill(cairo_t *cr);
void cairo_paint(cairo_t *cr);
void cairo_translate(cairo_t *cr, double tx, double ty);
void cairo_rotate(cairo_t *cr, double angle);
void cairo_select_font_face(cairo_t *cr, const char *family, int slant, int weight);
void cairo_set_font_size(cairo_t *cr, double size);
void cairo_text_extents(cairo_t *cr, const char *utf8, cairo_text_extents_t *extents);
void cairo_show_text(cairo_t *cr, const char *utf8);
void cairo_surface_flush(cairo_surface_t *surface);
unsigned char *cairo_image_surface_get_data(cairo_surface_t *surface);
int cairo_image_surface_get_stride(cairo_surface_t *surface);
]]

local FORMAT_RGB24, SVG_UNIT_PX, LINE_JOIN_ROUND = 1, 3, 1

M.formats = { png = true, svg = true, pdf = true }

-- The cairo library, opened at first use (name: another file to open, not kept; for checks).
local lib
function M.library(name)
  if lib and not name then return lib end
  local ok, l = pcall(ffi.load, name or "libcairo.so.2")
  if not ok then
    error("drawing needs the cairo library, which could not be loaded (" .. tostring(l)
      .. "): install the Debian package libcairo2 (make setup does)", 0)
  end
  if not name then lib = l end
  return l
end

local function check(C, status, what)
  if status ~= 0 then
    error(string.format("cannot write %s: %s", what, ffi.string(C.cairo_status_to_string(status))), 0)
  end
end

local Canvas = {}
Canvas.__index = Canvas

-- A w × h canvas that :close() writes to path as format ("png", "svg" or "pdf"), white.
function M.canvas(format, path, w, h)
  local C = M.library()
  local s
  if format == "png" then
    s = C.cairo_image_surface_create(FORMAT_RGB24, w, h)
  elseif format == "svg" then
    s = C.cairo_svg_surface_create(path, w, h)
  elseif format == "pdf" then
    s = C.cairo_pdf_surface_create(path, w, h)
  else
    error(string.format("unknown image format '%s' (expected png, svg or pdf)", tostring(format)), 2)
  end
  s = ffi.gc(s, C.cairo_surface_destroy)
  check(C, C.cairo_surface_status(s), path)
  if format == "svg" then C.cairo_svg_surface_set_document_unit(s, SVG_UNIT_PX) end
  local cr = ffi.gc(C.cairo_create(s), C.cairo_destroy)
  C.cairo_select_font_face(cr, "sans-serif", 0, 0)
  C.cairo_set_line_join(cr, LINE_JOIN_ROUND)
  local cv = setmetatable({ C = C, s = s, cr = cr, format = format, path = path, w = w, h = h,
                            extents = ffi.new("cairo_text_extents_t") }, Canvas)
  cv:rect(0, 0, w, h, { 255, 255, 255 })
  return cv
end

function Canvas:colour(c, alpha)
  self.C.cairo_set_source_rgba(self.cr, c[1] / 255, c[2] / 255, c[3] / 255, alpha or 1)
end

-- A polyline through pts ({{x, y}, ...}) of the given width; one path, one stroke.
function Canvas:polyline(pts, c, width)
  local C, cr = self.C, self.cr
  C.cairo_new_path(cr)
  for i, p in ipairs(pts) do
    if i == 1 then C.cairo_move_to(cr, p[1], p[2]) else C.cairo_line_to(cr, p[1], p[2]) end
  end
  self:colour(c)
  C.cairo_set_line_width(cr, width or 1)
  C.cairo_stroke(cr)
end

function Canvas:line(x0, y0, x1, y1, c, width)
  self:polyline({ { x0, y0 }, { x1, y1 } }, c, width)
end

-- A filled polygon at opacity alpha (default 1).
function Canvas:polygon(pts, c, alpha)
  local C, cr = self.C, self.cr
  C.cairo_new_path(cr)
  for i, p in ipairs(pts) do
    if i == 1 then C.cairo_move_to(cr, p[1], p[2]) else C.cairo_line_to(cr, p[1], p[2]) end
  end
  C.cairo_close_path(cr)
  self:colour(c, alpha)
  C.cairo_fill(cr)
end

-- A rectangle filled with fill (or not, when nil) and outlined with stroke (when given).
function Canvas:rect(x, y, w, h, fill, stroke)
  local C, cr = self.C, self.cr
  C.cairo_new_path(cr)
  C.cairo_rectangle(cr, x, y, w, h)
  if fill then self:colour(fill); C.cairo_fill(cr) end
  if stroke then
    C.cairo_rectangle(cr, x, y, w, h)
    self:colour(stroke)
    C.cairo_set_line_width(cr, 1)
    C.cairo_stroke(cr)
  end
end

function Canvas:dot(x, y, r, c)
  local C, cr = self.C, self.cr
  C.cairo_new_path(cr)
  C.cairo_arc(cr, x, y, r, 0, 2 * math.pi)
  self:colour(c)
  C.cairo_fill(cr)
end

-- s with each byte that does not begin a valid UTF-8 sequence replaced by '?' (cairo refuses
-- the whole drawing over one such byte, and a label may come from a Latin-1 file name).
local function utf8_clean(s)
  if not s:find("[\128-\255]") then return s end
  local out, i = {}, 1
  while i <= #s do
    local c = s:byte(i)
    local n = c < 0x80 and 1 or c >= 0xC2 and c <= 0xDF and 2 or c >= 0xE0 and c <= 0xEF and 3
              or c >= 0xF0 and c <= 0xF4 and 4 or 0
    local ok = n > 0 and i + n - 1 <= #s
    for k = 1, n - 1 do
      local b = ok and s:byte(i + k)
      -- no overlong forms, no surrogates, nothing past U+10FFFF
      local lo = k == 1 and (c == 0xE0 and 0xA0 or c == 0xF0 and 0x90) or 0x80
      local hi = k == 1 and (c == 0xED and 0x9F or c == 0xF4 and 0x8F) or 0xBF
      ok = ok and b >= lo and b <= hi
    end
    if ok then out[#out + 1] = s:sub(i, i + n - 1); i = i + n else out[#out + 1] = "?"; i = i + 1 end
  end
  return table.concat(out)
end

-- Advance width of s at font size `size`.
function Canvas:text_width(s, size)
  s = utf8_clean(s)
  self.C.cairo_set_font_size(self.cr, size or 12)
  self.C.cairo_text_extents(self.cr, s, self.extents)
  return self.extents.x_advance
end

-- Text s with its baseline at y; opts: size (12), colour (black), align ("left", "center",
-- "right": where x is), up (true: rotated to read bottom to top, x then being the baseline).
function Canvas:text(x, y, s, opts)
  opts = opts or {}
  local C, cr = self.C, self.cr
  local size = opts.size or 12
  s = utf8_clean(s)
  local wd = self:text_width(s, size)
  local dx = opts.align == "center" and -wd / 2 or opts.align == "right" and -wd or 0
  C.cairo_save(cr)
  C.cairo_translate(cr, x, y)
  if opts.up then C.cairo_rotate(cr, -math.pi / 2) end
  C.cairo_move_to(cr, dx, 0)
  self:colour(opts.colour or { 0, 0, 0 })
  C.cairo_show_text(cr, s)
  C.cairo_restore(cr)
end

-- The {r, g, b} of pixel (x, y) of a PNG canvas not yet closed (for checks).
function Canvas:pixel(x, y)
  assert(self.format == "png" and self.s, "pixel: an open PNG canvas only")
  self.C.cairo_surface_flush(self.s)
  local row = self.C.cairo_image_surface_get_data(self.s) + y * self.C.cairo_image_surface_get_stride(self.s)
  local v = ffi.cast("uint32_t *", row)[x]   -- RGB24: 0x00RRGGBB in a native-endian word
  return { bit.rshift(v, 16) % 256, bit.rshift(v, 8) % 256, v % 256 }
end

-- Writes the file and releases cairo's objects. Raises naming the file when it cannot be written.
function Canvas:close()
  local C, s, cr = self.C, self.s, self.cr
  self.s, self.cr = nil, nil
  local status = C.cairo_status(cr)
  C.cairo_destroy(ffi.gc(cr, nil))
  if status == 0 and self.format == "png" then status = C.cairo_surface_write_to_png(s, self.path) end
  C.cairo_surface_finish(s)
  if status == 0 then status = C.cairo_surface_status(s) end
  C.cairo_surface_destroy(ffi.gc(s, nil))
  check(C, status, self.path)
  return self.path
end

-- Text width without a canvas (for layouts computed before drawing).
local measurer
function M.text_width(s, size)
  measurer = measurer or M.canvas("png", nil, 1, 1)
  return measurer:text_width(s, size)
end

return M

-- Specs of the SHA-256 checked, resumable download (src/download.c) against HTTP servers
-- this spec starts on 127.0.0.1 serving files it writes: python3's http.server, and a small
-- subclass of it that honours Range requests and can cut a transfer short. Every server is
-- killed at the end, whatever happened (and, should the engine crash, by timeout(1) after
-- five minutes).
local H = require("helpers")
local sh, write, read = H.sh, H.write, H.read
local D = require("agt.data")




local function exists(path) return read(path) ~= nil end

-- n pseudo-random bytes (a fixed sequence).
local function payload(n, seed)
  local t, x = {}, seed or 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(math.floor(x / 65536) % 256)
  end
  return table.concat(t)
end

local function wait_for(path, pattern)
  for _ = 1, 200 do
    local s = read(path)
    local m = s and s:match(pattern)
    if m then return m end
    os.execute("sleep 0.05")
  end
  return nil
end

-- A Range-aware server: GET /f/NAME serves NAME (206 + Content-Range from a
-- "Range: bytes=N-" request); GET /cut/NAME announces the whole length but sends only half
-- of it, then closes; GET /endless/NAME sends NAME over and over with no length (up to 64 MB).
-- Each request is logged as "PATH RANGE".
local RANGE_SERVER = [[
import http.server, os, sys
root, log, portfile = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        cut = self.path.startswith('/cut/')
        if self.path.startswith('/endless/'):
            data = open(os.path.join(root, os.path.basename(self.path)), 'rb').read()
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(64 * 2**20 // len(data)):
                    self.wfile.write(data)
            except OSError:
                pass
            self.close_connection = True
            return
        path = os.path.join(root, os.path.basename(self.path))
        rng = self.headers.get('Range')
        with open(log, 'a') as f:
            f.write('%s %s\n' % (self.path, rng or '-'))
        try:
            data = open(path, 'rb').read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        if rng and rng.startswith('bytes=') and not cut:
            start = int(rng[6:].split('-')[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', 'bytes */%d' % len(data))
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            self.send_response(206)
            self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if cut:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
with open(portfile + '.tmp', 'w') as f:
    f.write('port %d\n' % srv.server_address[1])
os.rename(portfile + '.tmp', portfile)
srv.serve_forever()
]]

describe("agt.data downloads", function()
  local dir, srv, cache, plain_pid, range_pid, plain_port, range_port

  setup(function()
    dir = sh("mktemp -d /tmp/agt-download-spec-XXXXXX"):match("%S+")
    srv, cache = dir .. "/srv", dir .. "/cache"
    os.execute("mkdir -p " .. srv .. " " .. cache)
    write(srv .. "/good.bin", payload(300000, 1))
    write(srv .. "/truncated.bin", payload(300000, 1):sub(1, 200000))
    local corrupt = payload(300000, 1)
    write(srv .. "/corrupt.bin", corrupt:sub(1, 1000) .. "X" .. corrupt:sub(1002))
    write(dir .. "/range_server.py", RANGE_SERVER)
    -- python3 -m http.server on a free port (0: the kernel picks one; the server prints it)
    plain_pid = sh(string.format("timeout 300 python3 -u -m http.server 0 --bind 127.0.0.1 --directory %s "
                                 .. "> %s/plain.log 2>&1 & echo $!", srv, dir)):match("%d+")
    range_pid = sh(string.format("timeout 300 python3 -u %s/range_server.py %s %s/range.log %s/range.port "
                                 .. "> %s/range.out 2>&1 & echo $!", dir, srv, dir, dir, dir))
                :match("%d+")
    plain_port = wait_for(dir .. "/plain.log", "port (%d+)")
    range_port = wait_for(dir .. "/range.port", "port (%d+)")
  end)

  teardown(function()
    for _, pid in ipairs({ plain_pid, range_pid }) do
      if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local good = payload(300000, 1)
  local good_sha

  it("starts its servers", function()
    assert.is_truthy(plain_port)
    assert.is_truthy(range_port)
    good_sha = assert(D.sha256(srv .. "/good.bin"))
    assert.are.equal(64, #good_sha)
  end)

  local function url(name) return "http://127.0.0.1:" .. plain_port .. "/" .. name end
  local function rurl(kind, name) return "http://127.0.0.1:" .. range_port .. "/" .. kind .. "/" .. name end

  it("downloads a file, checks it and moves it into place", function()
    local dest = cache .. "/a/good.bin"   -- the directory is created
    assert.is_true(D.download(url("good.bin"), dest, { sha256 = good_sha, quiet = true }))
    assert.are.equal(good, read(dest))
    assert.is_false(exists(dest .. ".part"))
    -- already there: no transfer (the server is not even asked)
    assert.is_true(D.download("http://127.0.0.1:1/none", dest, { sha256 = good_sha, quiet = true }))
    -- a size alone also checks
    assert.is_true(D.download(url("good.bin"), cache .. "/a/good2.bin", { bytes = #good, quiet = true }))
  end)

  it("resumes a partial download with a Range request", function()
    local dest = cache .. "/resume.bin"
    -- the transfer is cut halfway: an error, the partial bytes kept, nothing at dest
    local ok, msg = D.download(rurl("cut", "good.bin"), dest,
                               { sha256 = good_sha, bytes = #good, quiet = true })
    assert.is_nil(ok)
    assert.matches("stopped after 150000 bytes", msg)
    assert.matches("resume", msg)
    assert.is_false(exists(dest))
    assert.are.equal(150000, #read(dest .. ".part"))
    -- the next attempt asks only for the rest
    assert.is_true(D.download(rurl("f", "good.bin"), dest, { sha256 = good_sha, quiet = true }))
    assert.are.equal(good, read(dest))
    assert.is_false(exists(dest .. ".part"))
    local log = read(dir .. "/range.log")
    assert.matches("/f/good.bin bytes=150000%-", log)
  end)

  it("starts over when the server ignores the range", function()
    local dest = cache .. "/restart.bin"
    write(dest .. ".part", good:sub(1, 1234))
    assert.is_true(D.download(url("good.bin"), dest, { sha256 = good_sha, quiet = true }))
    assert.are.equal(good, read(dest))
  end)

  it("starts over when the partial file holds wrong bytes", function()
    local dest = cache .. "/badpart.bin"
    write(dest .. ".part", string.rep("z", 5000))
    assert.is_true(D.download(rurl("f", "good.bin"), dest, { sha256 = good_sha, quiet = true }))
    assert.are.equal(good, read(dest))
    -- a partial file already whole is just checked and moved into place
    local dest2 = cache .. "/wholepart.bin"
    write(dest2 .. ".part", good)
    assert.is_true(D.download(rurl("f", "good.bin"), dest2, { sha256 = good_sha, quiet = true }))
    assert.are.equal(good, read(dest2))
  end)

  it("refuses a truncated download and leaves nothing whole in the cache", function()
    local dest = cache .. "/trunc.bin"
    local ok, msg = D.download(url("truncated.bin"), dest,
                               { sha256 = good_sha, bytes = #good, quiet = true })
    assert.is_nil(ok)
    assert.matches("200000 bytes, expected 300000", msg)
    assert.matches("truncated", msg)
    assert.is_false(exists(dest))
    assert.is_false(exists(dest .. ".part"))
    -- with only the digest known
    ok, msg = D.download(url("truncated.bin"), dest, { sha256 = good_sha, quiet = true })
    assert.is_nil(ok)
    assert.matches("SHA%-256", msg)
    assert.is_false(exists(dest))
  end)

  it("stops an endless server at the expected size and removes the partial file", function()
    local dest = cache .. "/endless.bin"
    local ok, msg = D.download(rurl("endless", "good.bin"), dest,
                               { sha256 = good_sha, bytes = #good, quiet = true })
    assert.is_nil(ok)
    assert.matches("more than the expected 300000 bytes", msg)
    assert.is_false(exists(dest))
    assert.is_false(exists(dest .. ".part"))
  end)

  it("refuses a corrupted download (bad SHA-256)", function()
    local dest = cache .. "/corrupt.bin"
    local ok, msg = D.download(url("corrupt.bin"), dest,
                               { sha256 = good_sha, bytes = #good, quiet = true })
    assert.is_nil(ok)
    assert.matches("SHA%-256 %x+, expected " .. good_sha, msg)
    assert.matches("corrupt.bin", msg)
    assert.is_false(exists(dest))
    assert.is_false(exists(dest .. ".part"))
  end)

  it("refuses a wrong file put at the destination by hand", function()
    local dest = cache .. "/byhand.bin"
    write(dest, "not it")
    local ok, msg = D.download(url("good.bin"), dest, { sha256 = good_sha, quiet = true })
    assert.is_nil(ok)
    assert.matches("byhand.bin", msg)
    assert.matches("remove it", msg)
    assert.are.equal("not it", read(dest))
  end)

  it("reports HTTP errors with the URL", function()
    local ok, msg = D.download(url("absent.bin"), cache .. "/absent.bin",
                               { sha256 = good_sha, quiet = true })
    assert.is_nil(ok)
    assert.matches("HTTP 404", msg)
    assert.matches("absent.bin", msg)
    assert.is_false(exists(cache .. "/absent.bin"))
  end)

  it("reports a refused connection: which URL, and where to put the file by hand", function()
    -- a port nobody listens on: bind one, then close it
    local port = sh("python3 -c \"import socket; s = socket.socket(); "
                    .. "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()\""):match("%d+")
    local u = "http://127.0.0.1:" .. port .. "/data.bin"
    local dest = cache .. "/refused.bin"
    local ok, msg = D.download(u, dest, { sha256 = good_sha, quiet = true })
    assert.is_nil(ok)
    assert.matches(u, msg, 1, true)
    assert.matches("put it at " .. dest, msg, 1, true)
    assert.matches(good_sha, msg, 1, true)
    assert.is_false(exists(dest))
    -- the same through a data set loader
    local set, msg2 = D.mnist({ dir = cache .. "/mnist", quiet = true,
                                mirrors = { "http://127.0.0.1:" .. port .. "/" } })
    assert.is_nil(set)
    assert.matches("train%-images%-idx3%-ubyte%.gz", msg2)
    assert.matches("put it at " .. cache .. "/mnist/", msg2, 1, true)
  end)

  it("downloads, checks and extracts a CIFAR-10 archive, then loads it", function()
    -- a small archive of the real layout, served by the Range-aware server
    local b = dir .. "/cifar-build/cifar-10-batches-bin"
    os.execute("mkdir -p " .. b)
    local function batch(n, k)
      local t = {}
      for r = 0, n - 1 do t[#t + 1] = string.char((r + k) % 10) .. string.rep(string.char(k), 3072) end
      return table.concat(t)
    end
    for k = 1, 5 do write(b .. "/data_batch_" .. k .. ".bin", batch(2, k)) end
    write(b .. "/test_batch.bin", batch(3, 9))
    write(b .. "/batches.meta.txt", "airplane\n")
    assert.are.equal(0, os.execute("cd " .. dir .. "/cifar-build && tar czf " .. srv
                                   .. "/small-cifar.tar.gz cifar-10-batches-bin"))
    local saved = D.CIFAR10_ARCHIVE
    D.CIFAR10_ARCHIVE = { name = saved.name, sha256 = assert(D.sha256(srv .. "/small-cifar.tar.gz")),
                          bytes = #read(srv .. "/small-cifar.tar.gz") }
    local ok, set, msg = pcall(D.cifar10, { dir = cache .. "/cifar", quiet = true,
                                            urls = { rurl("f", "small-cifar.tar.gz") } })
    D.CIFAR10_ARCHIVE = saved
    assert.is_true(ok, set)
    assert.is_truthy(set, msg)
    assert.are.same({ 10, 3, 32, 32 }, set.train.x.shape)
    assert.are.same({ 3, 3, 32, 32 }, set.test.x.shape)
    assert.are.equal(3, set.train.y[5])   -- batch 3, record 0
    assert.is_true(math.abs(set.train.x[4 * 3072 + 1] - 3 / 255) < 1e-7)
    -- the archive is gone once extracted; no partial files are left
    assert.is_false(exists(cache .. "/cifar/" .. saved.name))
    assert.are.equal("", sh("find " .. cache .. "/cifar -name '*.part'"))
    -- a wrong archive (the real digest expected) is refused, nothing extracted
    local s2, msg2 = D.cifar10({ dir = cache .. "/cifar-bad", quiet = true,
                                 urls = { rurl("f", "small-cifar.tar.gz") } })
    assert.is_nil(s2)
    assert.matches("refused: got %d+ bytes, expected 170052171", msg2)
    assert.is_false(exists(cache .. "/cifar-bad/cifar-10-batches-bin/test_batch.bin"))
  end)

  it("checks its arguments", function()
    assert.has_error(function() D.download(url("good.bin"), cache .. "/x.bin", {}) end)
    local ok, msg = D.download(url("good.bin"), cache .. "/x.bin", { sha256 = "abc" })
    assert.is_nil(ok)
    assert.matches("64 hex digits", msg)
  end)
end)

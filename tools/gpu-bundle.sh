#!/bin/sh
# tools/gpu-bundle.sh — run by `make gpu-bundle` after it built gpu-bundle/agt: adds what the
# specs and benchmarks need on a GPU machine that has no package manager: the Lua modules busted runs on (pure Lua) and the few C
# modules they and the benchmarks load (cjson, lfs, term, system), into gpu-bundle/lua5.1 and
# gpu-bundle/clib, and gpu-bundle/run.sh, which runs the bundled agt with them on its paths:
#   gpu-bundle/run.sh spec/run.lua spec/gpu_spec.lua
#   gpu-bundle/run.sh bench gar_gpu
set -e
cd "$(dirname "$0")/.."
B=gpu-bundle
LUA_SHARE=/usr/share/lua/5.1
LUA_LIB=/usr/lib/x86_64-linux-gnu/lua/5.1
mkdir -p $B/lua5.1 $B/clib
for m in busted busted.lua cliargs cliargs.lua dkjson.lua luassert mediator.lua pl say system term; do
  [ -e "$LUA_SHARE/$m" ] && cp -RL "$LUA_SHARE/$m" $B/lua5.1/
done
for m in cjson.so lfs.so system term; do
  [ -e "$LUA_LIB/$m" ] && cp -RL "$LUA_LIB/$m" $B/clib/
done
# A Fashion-MNIST subset (the GPU machine has no dataset package): the first 12000 training and
# 2000 test examples, as the same four IDX files (about 5 MB), for the --use-gpu specs and
# benchmarks: data-dir:gpu-bundle/data/fashion-mnist (they find it themselves).
FM=/usr/share/datasets/fashion-mnist
if [ -d "$FM" ]; then
  mkdir -p $B/data/fashion-mnist
  python3 - "$FM" $B/data/fashion-mnist <<'EOP'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for name, keep in (("train-images-idx3-ubyte", 12000), ("train-labels-idx1-ubyte", 12000),
                   ("t10k-images-idx3-ubyte", 2000), ("t10k-labels-idx1-ubyte", 2000)):
    raw = gzip.open(os.path.join(src, name + ".gz")).read()
    dims = raw[3]
    shape = list(struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims]))
    per = 1
    for v in shape[1:]: per *= v
    shape[0] = keep
    head = raw[:4] + struct.pack(">" + "I" * dims, *shape)
    body = raw[4 + 4 * dims:4 + 4 * dims + keep * per]
    with gzip.open(os.path.join(dst, name + ".gz"), "wb") as f:
        f.write(head + body)
EOP
fi
cat > $B/run.sh <<'EOS'
#!/bin/sh
# Runs the bundled agt with the bundled Lua modules; CUDA's libraries from the system. AGT_BIN=NAME
# runs another binary put in the bundle instead (a baseline build, for side-by-side benchmarks).
H=$(cd "$(dirname "$0")" && pwd)
export LUA_PATH="$H/lua5.1/?.lua;$H/lua5.1/?/init.lua;;"
export LUA_CPATH="$H/clib/?.so;;"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64:/usr/local/cuda/lib"
cd "$H"
exec "$H/${AGT_BIN:-agt}" "$@"
EOS
chmod +x $B/run.sh
du -sh $B

# agt — one GNU Makefile.
#   make            build ./agt and libagt.so (CUDA kernels too where nvcc is found)
#   make setup      install the Debian packages agt needs (root; only what is missing)
#   make test       setup + build + C unit tests + busted specs; last line "N passed, N failed"
#   make asan       build and run the C unit tests under AddressSanitizer
#   make asan-agt   the whole binary (./agt-asan) under ASAN+UBSan; the specs and torture with it
#   make torture    kill -9/SIGTERM, damaged checkpoints, two runs at once, a full disk
#                   (TORTURE_ROUNDS=20); make test runs a short form
#   make fuzz       libFuzzer (clang) on the checkpoint and event-file readers, the plugin
#                   validators and the transport's frame decoder and chunks, FUZZ_SECONDS=60 each
#   make bench      benchmarks, JSON lines on stdout
#   make demo       train the default experiment with Byzantine workers and a robust rule
#   make ffi        regenerate bindings/agt/cdef.lua from the public headers
#   make check-ffi  fail if bindings/agt/cdef.lua is out of date
#   make install PREFIX=/usr/local
#   make gpu-bundle a self-contained agt for a GPU machine, in gpu-bundle/

PREFIX   ?= /usr/local
CC       ?= gcc
WERROR   ?= 0
BUILD    := build
OPT      ?= -O3
CFLAGS_BASE := -std=gnu11 $(OPT) -g -fPIC -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE \
               -pthread -Isrc $(shell pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)
ifeq ($(WERROR),1)
CFLAGS_BASE += -Werror
endif
CFLAGS   := $(CFLAGS_BASE) $(EXTRA_CFLAGS)
LIBS     := -lopenblas -lzmq -lz -lcurl -lsodium -lm -lpthread -ldl
HOST_LIBS := -lluajit-5.1 -ledit

# Debian's python3 (python3-numpy, python3-torch) even where another python3 comes first on PATH.
PYTHON   ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
PYSITE   ?= $(PREFIX)/lib/python$(shell $(PYTHON) -c "import sys; print('%d.%d' % sys.version_info[:2])")/dist-packages

ENGINE_SRCS := $(filter-out src/main.c src/net_mpi.c,$(wildcard src/*.c))
ENGINE_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(ENGINE_SRCS))
CTEST_SRCS  := $(wildcard spec/c/test_*.c)
CTESTS      := $(patsubst spec/c/%.c,$(BUILD)/%,$(CTEST_SRCS))

# --- CUDA: built whenever nvcc and its static runtime are found ------------------------------
# nvcc may be a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc), so the toolkit's
# root is asked of nvcc itself (its -dryrun prints TOP=) and the runtime library is searched in
# the folders a toolkit may use. Without the runtime, the build is CPU-only and says why.
NVCC ?= $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
CUDA_SRCS := $(wildcard src/cuda/*.cu)
ifneq ($(NVCC),)
ifneq ($(CUDA_SRCS),)
CUDA_TOP    := $(shell $(NVCC) -dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^\#\$$ TOP=//p' | head -n 1)
CUDA_CANDS  := $(foreach t,$(CUDA_TOP) $(patsubst %/bin/nvcc,%,$(NVCC)) /usr/local/cuda,$(t)/lib64 $(t)/lib $(t)/targets/x86_64-linux/lib)
CUDA_LIBDIR := $(firstword $(foreach d,$(CUDA_CANDS),$(if $(wildcard $(d)/libcudart_static.a),$(realpath $(d)))))
ifeq ($(CUDA_TOP),)
CUDA_WHY := nvcc found at $(NVCC) does not run (nvcc -dryrun printed no TOP=)
else ifeq ($(CUDA_LIBDIR),)
CUDA_WHY := nvcc found at $(NVCC) but not libcudart_static.a (searched: $(CUDA_CANDS))
else ifeq ($(wildcard $(CUDA_LIBDIR)/libcublas.so),)
CUDA_WHY := nvcc found at $(NVCC) but not libcublas.so in $(CUDA_LIBDIR)
else
HAVE_CUDA := 1
endif
endif
endif
ifeq ($(HAVE_CUDA),1)
CUDA_ARCH  ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS  := -O3 -std=c++17 $(CUDA_ARCH) -Isrc -Xcompiler -fPIC,-Wall,-Wextra
CUDA_OBJS  := $(patsubst src/cuda/%.cu,$(BUILD)/obj/cuda/%.o,$(CUDA_SRCS))
CFLAGS     += -DAGT_HAVE_CUDA=1
# cuBLAS (the GEMMs of the training kernels) is linked dynamically: libcublas.so.13, with its
# libcublasLt, is found through an rpath to the toolkit's folder (so agt starts even where that
# folder is not in ld.so.conf), or on the loader's path elsewhere (the bundle's run.sh sets it).
CUDA_LIBS  := -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart_static -lcublas -lstdc++ -lrt
FEATURES   := CUDA
else
CUDA_OBJS  :=
CUDA_LIBS  :=
FEATURES   := CPU-only
endif

# --- MPI: the --MPI transport (src/net_mpi.c) in its own libagt_mpi.so, built where OpenMPI's
# compiler wrapper is found (Debian: openmpi-bin, libopenmpi-dev); agt loads it only for --MPI,
# so agt itself neither links nor needs MPI. Elsewhere the build says so and --MPI explains.
MPICC ?= $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell $(MPICC) --showme:link 2>/dev/null)
endif
ifneq ($(MPI_LIBS),)
MPI_SO   := libagt_mpi.so
FEATURES := $(FEATURES), MPI
else
MPI_SO   :=
MPI_WHY  := no MPI transport: OpenMPI's mpicc not found (apt-get install openmpi-bin libopenmpi-dev for --MPI)
endif

.PHONY: all setup test ctest spec asan asan-agt torture fuzz bench demo ffi check-ffi install clean gpu-bundle features
all: features agt libagt.so $(MPI_SO)

features:
	@echo "agt: building with $(FEATURES) (nvcc: $(if $(NVCC),$(NVCC),not found)$(if $(filter 1,$(HAVE_CUDA)),; CUDA runtime: $(CUDA_LIBDIR))), OpenBLAS, LuaJIT"
	$(if $(CUDA_WHY),@echo "agt: $(CUDA_WHY)")
	$(if $(MPI_WHY),@echo "agt: $(MPI_WHY)")

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/cuda/%.o: src/cuda/%.cu $(wildcard src/*.h src/cuda/*.h) | $(BUILD)/obj/cuda
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/obj $(BUILD)/obj/cuda:
	mkdir -p $@

$(BUILD)/libagt.a: $(ENGINE_OBJS) $(CUDA_OBJS)
	rm -f $@; ar rcs $@ $^

# -Wl,-E exports the engine's symbols so LuaJIT's FFI finds them in the binary itself.
LINK_AGT = $(CC) $(CFLAGS) -Wl,-E -o $@ $(BUILD)/obj/main.o -Wl,--whole-archive $(BUILD)/libagt.a \
	  -Wl,--no-whole-archive $(HOST_LIBS) $(CUDA_LIBS) $(LIBS)
agt: $(BUILD)/obj/main.o $(BUILD)/libagt.a
	$(LINK_AGT)

# Its engine symbols (agt_fail_at, agt_net_decode, ...) come from the agt that loads it.
$(BUILD)/obj/net_mpi.o: src/net_mpi.c src/net_mpi.h src/net.h src/status.h | $(BUILD)/obj
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -c $< -o $@

libagt_mpi.so: $(BUILD)/obj/net_mpi.o
	$(CC) $(CFLAGS) -shared -o $@ $< $(MPI_LIBS)

# The same binary under AddressSanitizer and UBSan (built by `make asan-agt`, beside ./agt so
# that it finds lua/ and bindings/ as ./agt does).
agt-asan: $(BUILD)/obj/main.o $(BUILD)/libagt.a
	$(LINK_AGT)

# --- libagt.so: the engine and its Lua library for programs in other languages -----------------
# The engine's C API plus bindings/embed.c, an embedded LuaJIT that runs the same Lua rule and
# attack files as ./agt (bindings/embed.h); the Python package (bindings/python/agt) loads it.
$(BUILD)/obj/embed.o: bindings/embed.c bindings/embed.h $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -Ibindings -c $< -o $@

libagt.so: $(BUILD)/obj/embed.o $(BUILD)/libagt.a
	$(CC) $(CFLAGS) -shared -o $@ $(BUILD)/obj/embed.o -Wl,--whole-archive $(BUILD)/libagt.a \
	  -Wl,--no-whole-archive -lluajit-5.1 $(CUDA_LIBS) $(LIBS)

$(BUILD)/test_%: spec/c/test_%.c spec/c/check.h $(BUILD)/libagt.a
	$(CC) $(CFLAGS) -Ispec/c -o $@ $< $(BUILD)/libagt.a $(CUDA_LIBS) $(LIBS)

setup:
	@sh tools/setup.sh

ctest: $(CTESTS)
	@for t in $(CTESTS); do echo "== $$t"; $$t || echo "0 passed, 1 failed ($$t exited $$?)"; done

spec: agt
	@./agt spec/run.lua $(SPEC_ARGS)

# Runs both suites whatever the outcome of the first, then prints one total line.
test: setup
	@$(MAKE) --no-print-directory all ctest-bins
	@rm -f $(BUILD)/test.log
	@$(MAKE) --no-print-directory ctest 2>&1 | tee -a $(BUILD)/test.log
	@./agt spec/run.lua $(SPEC_ARGS) 2>&1 | tee -a $(BUILD)/test.log
	@$(PYTHON) spec/python/run.py 2>&1 | tee -a $(BUILD)/test.log
	@./agt tools/torture.lua 2 2>&1 | sed 's/^/torture: /; s/^torture: \([0-9]* passed\)/\1/' | tee -a $(BUILD)/test.log
	@sh tools/test-summary.sh $(BUILD)/test.log

ctest-bins: $(CTESTS)

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" ctest-bins
	@rm -f build-asan/test.log
	@for t in $(patsubst $(BUILD)/%,build-asan/%,$(CTESTS)); do echo "== $$t"; \
	  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 $$t || echo "0 passed, 1 failed ($$t exited $$?)"; done 2>&1 | tee build-asan/test.log
	@sh tools/test-summary.sh build-asan/test.log

# The whole binary built with AddressSanitizer and UBSan (CPU-only, any UB fatal); the specs and
# a short torture run under it. (Leaks are not checked: LuaJIT's state lives until exit.)
ASAN_AGT_CFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan-agt:
	@$(MAKE) --no-print-directory BUILD=build-asan-agt OPT=-O1 NVCC= EXTRA_CFLAGS="$(ASAN_AGT_CFLAGS)" agt-asan
	@rm -f build-asan-agt/test.log
	@ASAN_OPTIONS=detect_leaks=0 ./agt-asan spec/run.lua $(SPEC_ARGS) 2>&1 | tee -a build-asan-agt/test.log
	@ASAN_OPTIONS=detect_leaks=0 ./agt-asan tools/torture.lua 3 2>&1 | tee -a build-asan-agt/test.log
	@sh tools/test-summary.sh build-asan-agt/test.log

TORTURE_ROUNDS ?= 20
torture: all
	@./agt tools/torture.lua $(TORTURE_ROUNDS)

# libFuzzer: a driver built with clang, ASAN and UBSan around the Lua state, linked with the
# engine as built for ./agt (the targets are Lua readers and validators); each target of
# tools/fuzz/targets.lua runs FUZZ_SECONDS from a corpus seeded with valid files. A crash is
# kept as build-fuzz/<target>-crash-*; replay: AGT_FUZZ_TARGET=<target> build-fuzz/fuzz-agt FILE.
FUZZ_SECONDS ?= 60
# The targets net and net-chunks are C (tools/fuzz/net.c: the transport's frame decoder, and
# its putting chunks together), their own binary with src/net.c instrumented, run with leak
# detection; the Lua ones without (the Lua state lives on).
FUZZ_TARGETS := checkpoint tfevents plugin net net-chunks
fuzz: agt build-fuzz/fuzz-agt build-fuzz/fuzz-net
	@./agt tools/fuzz/seeds.lua build-fuzz/corpus
	@for t in $(FUZZ_TARGETS); do echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  bin=build-fuzz/fuzz-agt; leaks=0; case $$t in net*) bin=build-fuzz/fuzz-net; leaks=1;; esac; \
	  if AGT_ROOT=$(CURDIR) AGT_FUZZ_TARGET=$$t ASAN_OPTIONS=detect_leaks=$$leaks $$bin \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=build-fuzz/$$t- \
	    build-fuzz/corpus/$$t > build-fuzz/$$t.log 2>&1; then grep -E "DONE" build-fuzz/$$t.log; \
	  else tail -n 30 build-fuzz/$$t.log; echo "fuzz $$t: FAILED (input kept in build-fuzz/)"; exit 1; fi; \
	done

build-fuzz/fuzz-agt: tools/fuzz/fuzz.c $(BUILD)/libagt.a
	@command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 1; }
	@mkdir -p build-fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Wall -Wextra $(filter -I%,$(CFLAGS)) \
	  -Wl,-E -o $@ $< -Wl,--whole-archive $(BUILD)/libagt.a -Wl,--no-whole-archive \
	  -lluajit-5.1 $(CUDA_LIBS) $(LIBS)

build-fuzz/fuzz-net: tools/fuzz/net.c src/net.c src/net.h src/status.c src/status.h
	@command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 1; }
	@mkdir -p build-fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Wall -Wextra -D_GNU_SOURCE -pthread -Isrc \
	  -o $@ tools/fuzz/net.c src/net.c src/status.c -lzmq -lpthread

bench: all
	@./agt bench all
	@$(PYTHON) bench/python_gar.py

# The main job: fashion-mnist, n = 11 workers of which 2 attack with `lie`, rule bulyan (n >= 4f+3
# holds with equality), 3000 steps; evaluation file, checkpoints and summaries in runs/demo/,
# then the plot. Starts afresh each time; fails unless the final test accuracy is above 80%.
demo: setup all
	@rm -rf runs/demo
	./agt run --experiment fashion-mnist --aggregator bulyan --nb-workers 11 \
	  --nb-decl-byz-workers 2 --nb-real-byz-workers 2 --attack lie \
	  --learning-rate-args initial-rate:0.05 --max-step 3000 --seed 1 --checkpoint-dir runs/demo \
	  --checkpoint-delta 500 --evaluation-delta 250 --evaluation-period -1 --summary-delta 50
	@./agt plot runs/demo/eval --output runs/demo/plot \
	  --title "fashion-mnist: bulyan, 2 of 11 workers attack (lie)" >/dev/null
	@tail -n 1 runs/demo/eval | awk -F'\t' '{ split($$3, m, ":"); ok = (m[2] + 0 > 0.8); \
	  printf "demo: final %s = %s at step %d: %s\n", m[1], m[2], $$2, ok ? "above 80%" : "NOT above 80%"; \
	  exit !ok }'
	@echo "demo: plot in runs/demo/plot.png and runs/demo/plot.svg"

ffi:
	luajit tools/gen_ffi.lua src > bindings/agt/cdef.lua

check-ffi:
	@luajit tools/gen_ffi.lua src > $(BUILD)/cdef.check.lua 2>/dev/null || { mkdir -p $(BUILD); luajit tools/gen_ffi.lua src > $(BUILD)/cdef.check.lua; }
	@cmp -s $(BUILD)/cdef.check.lua bindings/agt/cdef.lua \
	  && echo "bindings/agt/cdef.lua is up to date" \
	  || { echo "bindings/agt/cdef.lua is out of date: run 'make ffi' and commit it"; diff $(BUILD)/cdef.check.lua bindings/agt/cdef.lua | head -20; exit 1; }

# The binary, and beside it in share/agt everything its help points to: the Lua tree, the
# benchmarks, the examples and the docs; the man page.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/agt $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 agt $(DESTDIR)$(PREFIX)/bin/agt
	cp -R lua bindings bench examples docs $(DESTDIR)$(PREFIX)/share/agt/
	$(if $(MPI_SO),install -m 755 $(MPI_SO) $(DESTDIR)$(PREFIX)/share/agt/$(MPI_SO))
	install -m 644 docs/agt.1 $(DESTDIR)$(PREFIX)/share/man/man1/agt.1
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PYSITE)
	install -m 755 libagt.so $(DESTDIR)$(PREFIX)/lib/libagt.so
	echo "$(PREFIX)/share/agt/bindings/python" > $(DESTDIR)$(PYSITE)/agt.pth

# A binary for a GPU machine with no package manager: LuaJIT, OpenBLAS and ZeroMQ static (libzmq.a
# with its PGM and NORM transports; its GSSAPI library is dynamic, as libcurl already needs it), CUDA
# runtime static; beside it the Lua tree, the specs and the benchmarks; and libagt.so for the Python
# package (bindings/python), with the shared LuaJIT, OpenBLAS, libsodium and libzmq beside it (their
# static archives are not all position-independent).
gpu-bundle:
	@test "$(HAVE_CUDA)" = 1 || { echo "gpu-bundle needs nvcc and libcudart_static.a $(CUDA_WHY)"; exit 1; }
	@$(MAKE) --no-print-directory BUILD=build-gpu $(BUILD:build=build-gpu)/libagt.a build-gpu/obj/main.o
	rm -rf gpu-bundle && mkdir -p gpu-bundle
	$(CC) -Wl,-E -o gpu-bundle/agt build-gpu/obj/main.o -Wl,--whole-archive build-gpu/libagt.a \
	  -Wl,--no-whole-archive -Wl,-Bstatic -lluajit-5.1 -lopenblas -lzmq -lpgm -lnorm -lprotokit -lsodium -ledit -lbsd -lmd -ltinfo \
	  -Wl,-Bdynamic -L$(CUDA_LIBDIR) -lcudart_static -lcublas -lgssapi_krb5 -lz -lcurl -lgfortran -lstdc++ -lpthread -lm -ldl -lrt
	cp -R lua bindings spec bench examples gpu-bundle/
	@$(MAKE) --no-print-directory BUILD=build-gpu build-gpu/obj/embed.o
	$(CC) -shared -o gpu-bundle/libagt.so build-gpu/obj/embed.o -Wl,--whole-archive build-gpu/libagt.a \
	  -Wl,--no-whole-archive -lluajit-5.1 -lopenblas -lzmq -lsodium -Wl,-rpath,'$$ORIGIN' \
	  -L$(CUDA_LIBDIR) -lcudart_static -lcublas -lz -lcurl -lgfortran -lstdc++ -lpthread -lm -ldl -lrt
	ldd gpu-bundle/libagt.so | awk '/libluajit|libopenblas|libsodium|libzmq|libpgm|libnorm/ { print $$3 }' | xargs -I{} cp -L {} gpu-bundle/
	@sh tools/gpu-bundle.sh
	@echo "gpu-bundle/ ready: copy it to the GPU machine and run gpu-bundle/run.sh there"

clean:
	rm -rf $(BUILD) build-asan build-asan-agt build-fuzz build-gpu gpu-bundle agt agt-asan libagt.so libagt_mpi.so

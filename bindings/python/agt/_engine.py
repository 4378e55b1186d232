"""The engine as this package reaches it: libagt.so through ctypes, and one embedded Lua state.

libagt.so is agt's engine (its C API, the one the Lua bindings use) plus an embedded LuaJIT
that runs agt's own Lua rule and attack files (bindings/embed.h). Requests and answers are one
JSON object each; arrays travel as addresses and are used in place.

Where the library and the tree (the folder holding lua/ and bindings/) are found, in order:
  AGT_LIB and AGT_ROOT from the environment;
  the tree this package sits in (bindings/python/agt), with libagt.so at its top (a build
  directory, or the bundle of `make gpu-bundle`), or PREFIX/lib/libagt.so when the tree is
  PREFIX/share/agt (`make install`).
"""
import ctypes
import json
import os
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))


class EngineError(RuntimeError):
    """A failure inside agt while computing (not a misuse the caller can fix)."""


def _locate():
    root = os.environ.get("AGT_ROOT") or os.path.normpath(os.path.join(_HERE, "..", "..", ".."))
    lib = os.environ.get("AGT_LIB")
    if lib and not os.path.exists(lib):
        raise ImportError("agt: AGT_LIB names %s, which does not exist" % lib)
    if not lib:
        for cand in (os.path.join(root, "libagt.so"),
                     os.path.normpath(os.path.join(root, "..", "..", "lib", "libagt.so"))):
            if os.path.exists(cand):
                lib = cand
                break
    if not lib:
        raise ImportError(
            "agt: libagt.so not found beside the tree %s nor in its PREFIX/lib: build it with "
            "'make' (or 'make install'), or set AGT_LIB to its path" % root)
    if not os.path.exists(os.path.join(root, "lua", "agt", "foreign.lua")):
        raise ImportError("agt: %s is not an agt tree (no lua/agt/foreign.lua): set AGT_ROOT" % root)
    return lib, root


class Engine:
    """One Lua state of libagt.so; calls are serialised (the state is single-threaded)."""

    def __init__(self):
        self.lib_path, self.root = _locate()
        # RTLD_GLOBAL: the state's FFI (LuaJIT's ffi.C) finds the engine's symbols in the
        # process's global scope, as it finds them in the ./agt binary.
        self.lib = lib = ctypes.CDLL(self.lib_path, mode=ctypes.RTLD_GLOBAL)
        lib.agt_lua_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.agt_lua_open.restype = ctypes.c_int
        lib.agt_lua_call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_char_p)]
        lib.agt_lua_call.restype = ctypes.c_int
        lib.agt_lua_close.argtypes = [ctypes.c_void_p]
        lib.agt_last_error.restype = ctypes.c_char_p
        lib.agt_gpu_set_device.argtypes = [ctypes.c_int]
        lib.agt_gpu_set_device.restype = ctypes.c_int
        lib.agt_pool_set_threads.argtypes = [ctypes.c_int]
        lib.agt_pool_set_threads.restype = ctypes.c_int
        lib.agt_pool_threads.restype = ctypes.c_int
        self._lock = threading.Lock()
        self._state = ctypes.c_void_p()
        self._device = None
        if lib.agt_lua_open(self.root.encode(), ctypes.byref(self._state)) != 0:
            raise ImportError("agt: " + self._last_error())

    def _last_error(self):
        msg = self.lib.agt_last_error()
        return msg.decode(errors="replace") if msg else "unknown error"

    def call(self, fn, request):
        """Runs agt.foreign[fn](request); ValueError or EngineError from an error answer."""
        text = json.dumps(request).encode()
        reply = ctypes.c_char_p()
        with self._lock:
            if self.lib.agt_lua_call(self._state, fn.encode(), text, ctypes.byref(reply)) != 0:
                raise EngineError(self._last_error())
            answer = json.loads(reply.value)
        if "error" in answer:
            if answer.get("kind") == "value":
                raise ValueError(answer["error"])
            raise EngineError(answer["error"])
        return answer

    def use_device(self, index):
        """Points the engine's CUDA backend at device `index` (it drives one at a time)."""
        if self._device != index:
            with self._lock:
                if self.lib.agt_gpu_set_device(index) != 0:
                    raise EngineError(self._last_error())
                self._device = index


_engine = None
_engine_lock = threading.Lock()


def engine():
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = Engine()
    return _engine

"""Reproducers of the boundary defects a probe found, each a function that raises AssertionError if
the defect is back (a crash shows as the process dying). Only NumPy and ``l2s._C``: the pytest suite
runs them in child processes (tests/test_reliability.py) and scripts/sanitize.sh runs them all
under ASan + UBSan (``python tests/reproducers.py``).
"""
from __future__ import annotations

import ctypes
import os
import sys
import tempfile
import threading

import numpy as np

from l2s import _C


class Capsule:
    """A DLPack producer whose legacy capsule is built by hand (ctypes), with a chosen data pointer."""

    class DLDevice(ctypes.Structure):
        _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]

    class DLDataType(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]

    class DLTensor(ctypes.Structure):
        pass

    class DLManagedTensor(ctypes.Structure):
        pass

    DLTensor._fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int),
                         ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                         ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]
    DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]

    def __init__(self, data_ptr: int | None, n: int):
        self.shape = (ctypes.c_int64 * 1)(n)
        self.mt = self.DLManagedTensor()
        self.mt.dl_tensor.data = data_ptr
        self.mt.dl_tensor.device = self.DLDevice(1, 0)
        self.mt.dl_tensor.ndim = 1
        self.mt.dl_tensor.dtype = self.DLDataType(2, 32, 1)            # float32
        self.mt.dl_tensor.shape = self.shape
        self.mt.deleter = None

    def __dlpack__(self, stream=None):
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self.mt), b"dltensor", None)

    def __dlpack_device__(self):
        return (1, 0)


def resize_65536(folder: str) -> None:
    """Sides up to 65536 are accepted; offsets past 2^31 pixels used to wrap (a segfault). A sparse
    file stands in for the 16 GiB map: bilinear to 2x2 reads (and, accumulating, writes) 16 pixels."""
    side = 65536
    big = np.memmap(os.path.join(folder, "big.f32"), dtype=np.float32, mode="w+", shape=(side, side))
    big[side * 3 // 4, side * 3 // 4] = 4.0
    out = np.zeros((2, 2), np.float32)
    _C.resize_maps_forward(big, out, "bilinear")
    assert out[1, 1] > 0 and out[0, 0] == 0
    _C.resize_maps_backward(np.ones((2, 2), np.float32), big, "bilinear", 1.0, True)
    assert big[side * 3 // 4 - 1, side * 3 // 4 - 1] > 0


def classifier_overflow() -> None:
    """Sizes that overflowed (a negative count, then a heap overflow in classifier_forward)."""
    base = dict(n_maps=2, map_pixels=256, n_steps=50, step_dim=16, hidden1=256, hidden2=128, n_relations=4)
    for bad in (dict(hidden1=2 ** 21), dict(n_relations=2 ** 21), dict(map_pixels=2 ** 23),
                dict(n_steps=2 ** 24, step_dim=2 ** 20), dict(hidden1=2 ** 20, hidden2=2 ** 20)):
        try:
            _C.classifier_config(**{**base, **bad})
        except ValueError:
            continue
        raise AssertionError(f"config {bad} was accepted")


def index_race(iterations: int = 3000) -> None:
    """A thread rewriting the token table and the labels while ops run: every call raises or
    computes on a checked copy (the second read used to go out of bounds)."""
    q, k = np.random.rand(1, 2, 64, 8).astype(np.float32), np.random.rand(1, 2, 5, 8).astype(np.float32)
    table, out = np.array([[1], [2]], np.int32), np.zeros((1, 2, 64), np.float32)
    cfg = _C.classifier_config(n_maps=2, map_pixels=4, n_steps=5, step_dim=3, hidden1=6, hidden2=5, n_relations=4)
    n, ws, X = _C.classifier_sizes(cfg, 64)
    params, work = np.random.rand(n).astype(np.float32), np.zeros(ws, np.float32)
    x, probs, losses = np.random.rand(64, X).astype(np.float32), np.zeros((64, 4), np.float32), np.zeros(64, np.float32)
    steps, labels = np.zeros(64, np.int32), np.zeros(64, np.int32)
    stop = []

    def writer():
        i = 0
        while not stop:
            table[1, 0] = 2 if i % 2 else 10 ** 6
            labels[5] = 1 if i % 2 else -(10 ** 6)
            i += 1
    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(iterations):
            try:
                _C.attn_maps_forward(q, k, table, out, 0.3)
                _C.classifier_forward(cfg, params, x, steps, labels, work, probs, losses)
                _C.classifier_backward(cfg, params, steps, labels, work, None, np.zeros(n, np.float32))
            except ValueError:
                pass
    finally:
        stop.append(1)
        t.join()


def null_data() -> None:
    try:
        _C.normalize_maps_forward(Capsule(None, 4), np.zeros(4, np.float32))
    except ValueError as exc:
        assert "NULL data pointer" in str(exc)
        return
    raise AssertionError("a NULL data pointer was read")


def immutable_legacy() -> None:
    """l2s used to write through a legacy capsule into an immutable bytes object."""
    data = bytes(16)
    ptr = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    try:
        _C.normalize_maps_forward(np.ones(4, np.float32), Capsule(ptr, 4))
    except ValueError as exc:
        assert "read-only" in str(exc)
    assert data == bytes(16), "immutable memory was written"


def env_race(writes: int = 20000) -> None:
    """Settings are read with the GIL held, never by a released op (getenv raced putenv)."""
    q, k = np.random.rand(1, 2, 256, 16).astype(np.float32), np.random.rand(1, 2, 9, 16).astype(np.float32)
    table, out = np.array([[1], [2]], np.int32), np.zeros((1, 2, 256), np.float32)
    stop = []

    def ops():
        while not stop:
            _C.attn_maps_forward(q, k, table, out, 0.25)
    ts = [threading.Thread(target=ops) for _ in range(2)]
    for t in ts:
        t.start()
    try:
        for i in range(writes):
            os.environ["L2S_NUM_THREADS"] = str(1 + i % 3)
            os.environ["L2S_SIMD"] = "sse2" if i % 2 else "auto"
    finally:
        stop.append(1)
        for t in ts:
            t.join()
        os.environ.pop("L2S_NUM_THREADS"), os.environ.pop("L2S_SIMD")


ALL = {"classifier_overflow": classifier_overflow, "index_race": index_race, "null_data": null_data,
       "immutable_legacy": immutable_legacy, "env_race": env_race}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        resize_65536(folder)
    for name, fn in ALL.items():
        fn()
        print(name, "ok")
    sys.exit(0)

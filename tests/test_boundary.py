"""csrc/tensor.c, csrc/buffer.c, csrc/module.c: zero-copy in and out, DLPack both ways, validation."""
import ctypes
import gc
import subprocess
import sys

import numpy as np
import pytest
import torch

from l2s import _C
import l2s

FIELDS = dict(n_maps=2, map_pixels=4, n_steps=5, step_dim=3, hidden1=6, hidden2=5, n_relations=4, leaky_slope=0.1,
              ln_eps=1e-5)
CFG = _C.classifier_config(**FIELDS)


# ---- DLPack producer: _C.Buffer ----------------------------------------------------------
def test_buffer_shares_memory_with_numpy_and_torch():
    buf = _C.empty((3, 4), "float32")
    a = np.from_dlpack(buf)
    t = torch.from_dlpack(buf)
    assert a.ctypes.data == t.data_ptr() == buf.data_ptr
    a[...] = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert t[2, 3].item() == 11.0                       # the same bytes, no copy
    assert buf.shape == (3, 4) and buf.dtype == "float32" and buf.device == ("cpu", 0) and buf.nbytes == 48


@pytest.mark.parametrize("dtype,np_dtype", [("float32", np.float32), ("float16", np.float16), ("int32", np.int32), ("int64", np.int64)])
def test_buffer_dtypes(dtype, np_dtype):
    assert np.from_dlpack(_C.empty((2,), dtype)).dtype == np_dtype


def test_buffer_bfloat16_reaches_torch():
    assert torch.from_dlpack(_C.empty((2, 2), "bfloat16")).dtype == torch.bfloat16


def test_buffer_versioned_and_legacy_capsules():
    buf = _C.empty((2,))
    cap_v = buf.__dlpack__(max_version=(1, 0))
    cap_l = buf.__dlpack__()
    assert "dltensor_versioned" in repr(cap_v) and '"dltensor"' in repr(cap_l)
    del cap_v, cap_l                                    # unconsumed capsules free their tensors
    gc.collect()


def test_buffer_outlives_its_python_object():
    buf = _C.empty((1000,))
    a = np.from_dlpack(buf)
    a[:] = 5.0
    del buf
    gc.collect()
    assert (a == 5.0).all()                             # the exported tensor keeps the memory alive


def test_buffer_refuses_copy_and_foreign_device():
    buf = _C.empty((2,))
    with pytest.raises(BufferError):
        buf.__dlpack__(max_version=(1, 0), copy=True)
    with pytest.raises(BufferError):
        buf.__dlpack__(max_version=(1, 0), dl_device=(2, 0))


def test_buffer_as_op_output(rng):
    q = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    k = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    out = _C.empty((1, 1, 5))
    _C.attn_maps_forward(q, k, l2s.token_table([[1]]), out, 0.5)
    np.testing.assert_array_equal(np.from_dlpack(out), l2s.attn_maps_forward(q, k, [[1]], 0.5))


def test_empty_on_cuda_without_cuda_is_an_error():
    if _C.cuda_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises((RuntimeError, MemoryError)):
        _C.empty((2,), device="cuda")


# ---- DLPack consumer -----------------------------------------------------------------------
class LegacyProducer:
    """A pre-1.0 producer: __dlpack__ takes no max_version."""
    def __init__(self, t):
        self.t = t
    def __dlpack__(self, stream=None):
        return self.t.__dlpack__()
    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def test_legacy_producer_is_read_but_never_written(rng):
    """A legacy (unversioned) capsule cannot flag read-only memory: inputs are read through it,
    outputs are refused (NumPy's rule), so nothing immutable is ever written."""
    z = torch.from_numpy(rng.standard_normal((2, 8)).astype(np.float32))
    g = torch.ones(2, 8)
    want = z - 0.5 * g / np.sqrt(8)
    _C.latent_update(z, LegacyProducer(g), np.zeros(2, np.float32), 0.5)        # read through legacy: fine
    torch.testing.assert_close(z, want)
    before = z.clone()
    with pytest.raises(ValueError, match="z is read-only"):
        _C.latent_update(LegacyProducer(z), g, np.zeros(2, np.float32), 0.5)
    torch.testing.assert_close(z, before)


def test_torch_output_is_written_in_place_zero_copy(rng):
    q = torch.randn(1, 2, 6, 4); k = torch.randn(1, 2, 3, 4)
    out = torch.full((1, 1, 6), float("nan"))
    ptr = out.data_ptr()
    res = l2s.attn_maps_forward(q, k, [[0]], out=out)
    assert res is out and out.data_ptr() == ptr and torch.isfinite(out).all()


def test_torch_slices_with_offsets(rng):
    """A view into the middle of a tensor (non-zero storage offset) is read at the right place."""
    base = torch.randn(4, 2, 6, 4)
    q = base[2:3]
    k = torch.randn(1, 2, 3, 4)
    np.testing.assert_array_equal(l2s.attn_maps_forward(q, k, [[1]]).numpy(), l2s.attn_maps_forward(q.clone(), k, [[1]]).numpy())


def test_requires_grad_tensor_direct_to_core_names_the_argument():
    q = torch.randn(1, 1, 2, 2, requires_grad=True)
    with pytest.raises(ValueError, match=r"^q: .*detached"):
        _C.attn_maps_forward(q, torch.randn(1, 1, 2, 2), l2s.token_table([[0]]), torch.empty(1, 1, 2), 1.0)


# ---- validation: every entry point, one bad argument at a time -----------------------------
def _good():
    f = np.float32
    return dict(
        q=np.zeros((1, 2, 4, 3), f), k=np.zeros((1, 2, 5, 3), f), tok=l2s.token_table([[0], [1, 2]]),
        maps=np.zeros((1, 2, 4), f), dq=np.zeros((1, 2, 4, 3), f), dk=np.zeros((1, 2, 5, 3), f),
        x=np.zeros((2, 8), f), probs=np.zeros((2, 4), f), losses=np.zeros(2, f),
        steps=np.zeros(2, np.int32), labels=np.zeros(2, np.int32),
        params=np.zeros(_C.classifier_sizes(CFG, 1)[0], f), ws=np.zeros(_C.classifier_sizes(CFG, 2)[1], f),
        vec=np.zeros(10, f), z=np.zeros((2, 5), f), norms=np.zeros(2, f),
        m16=np.zeros((2, 3, 16, 16), f), m8=np.zeros((2, 3, 8, 8), f),
    )


def _call(op, **over):
    a = {**_good(), **over}
    calls = {
        "attn_fwd": lambda: _C.attn_maps_forward(a["q"], a["k"], a["tok"], a["maps"], 0.5),
        "attn_bwd": lambda: _C.attn_maps_backward(a["q"], a["k"], a["tok"], a["maps"], a["dq"], a["dk"], 0.5),
        "resize_fwd": lambda: _C.resize_maps_forward(a["m16"], a["m8"], "area"),
        "resize_bwd": lambda: _C.resize_maps_backward(a["m8"], a["m16"], "area"),
        "norm_fwd": lambda: _C.normalize_maps_forward(a["vec"], a["vec"].copy()),
        "norm_bwd": lambda: _C.normalize_maps_backward(a["vec"], a["vec"].copy(), a["vec"].copy()),
        "clf_fwd": lambda: _C.classifier_forward(a.get("cfg", CFG), a["params"], a["x"], a["steps"], a["labels"], a["ws"], a["probs"], a["losses"]),
        "clf_bwd": lambda: _C.classifier_backward(a.get("cfg", CFG), a["params"], a["steps"], a["labels"], a["ws"], a["x"], a["params"].copy()),
        "adamw": lambda: _C.adamw_update(a["vec"], a["vec"].copy(), a["vec"].copy(), a.get("v", a["vec"].copy()), 1e-3, step=a.get("t", 1)),
        "latent": lambda: _C.latent_update(a["z"], a.get("g", a["z"].copy()), a["norms"], a.get("step", 0.1)),
    }
    return calls[op]()


def test_good_arguments_pass():
    for op in ["attn_fwd", "attn_bwd", "resize_fwd", "resize_bwd", "norm_fwd", "norm_bwd", "clf_fwd", "clf_bwd", "adamw", "latent"]:
        _call(op)


f32, f64 = np.float32, np.float64
BAD = [
    # (op, overrides, exception, message fragment)
    ("attn_fwd", dict(q=np.zeros((1, 2, 4, 3), f64)), TypeError, "q"),
    ("attn_fwd", dict(q=[[1.0]]), TypeError, "q must be a NumPy array"),
    ("attn_fwd", dict(k=np.zeros((1, 2, 5, 3), np.float16)), TypeError, "k must be float32"),
    ("attn_fwd", dict(k=np.zeros((1, 3, 5, 3), f32)), ValueError, "k has shape"),
    ("attn_fwd", dict(q=np.zeros((2, 4, 3), f32)), ValueError, "q has shape"),
    ("attn_fwd", dict(tok=l2s.token_table([[0], [5]])), ValueError, r"tokens\[1, 0\] = 5 is out of range"),
    ("attn_fwd", dict(tok=np.array([[-1, -1]], np.int32)), ValueError, "no token"),
    ("attn_fwd", dict(tok=np.array([[-3]], np.int32)), ValueError, "out of range"),
    ("attn_fwd", dict(tok=np.zeros((1, 65), np.int32)), ValueError, "slots"),
    ("attn_fwd", dict(tok=np.zeros((2, 1), np.int64)), TypeError, "tokens must be int32"),
    ("attn_fwd", dict(maps=np.zeros((1, 3, 4), f32)), ValueError, "maps has shape"),
    ("attn_fwd", dict(maps=np.zeros((1, 4, 2), f32).transpose(0, 2, 1)), ValueError, "maps must be C-contiguous"),
    ("attn_fwd", dict(maps=torch.zeros(1, 2, 4)), None, None),
    ("attn_bwd", dict(dq=np.zeros((1, 2, 4, 3), np.float16)), TypeError, "dq must be float32"),
    ("attn_bwd", dict(dk=np.zeros((1, 2, 4, 3), f32)), ValueError, "dk has shape"),
    ("resize_fwd", dict(m8=np.zeros((2, 4, 8, 8), f32)), ValueError, "out has shape"),
    ("resize_fwd", dict(m16=np.zeros((16,), f32)), ValueError, "at least 2 dims"),
    ("resize_bwd", dict(m8=np.zeros((2, 3, 8, 8), f64)), TypeError, "dout"),
    ("norm_fwd", dict(vec=np.zeros((0,), f32)), ValueError, "non-empty"),
    ("clf_fwd", dict(cfg=(2, 4)), TypeError, "config must be made by classifier_config"),
    ("clf_fwd", dict(params=np.zeros(7, f32)), ValueError, "params has shape"),
    ("clf_fwd", dict(x=np.zeros((2, 9), f32)), ValueError, "x must hold 2 rows"),
    ("clf_fwd", dict(steps=np.array([0, 5], np.int32)), ValueError, r"steps\[1\] = 5 is out of range"),
    ("clf_fwd", dict(steps=None), ValueError, "steps is required"),
    ("clf_fwd", dict(labels=np.array([0, 4], np.int32)), ValueError, r"labels\[1\] = 4"),
    ("clf_fwd", dict(labels=np.zeros(2, np.int64)), TypeError, "labels must be int32"),
    ("clf_fwd", dict(ws=np.zeros(10, f32)), ValueError, "workspace holds 10 floats"),
    ("clf_fwd", dict(probs=np.zeros((2, 3), f32)), ValueError, "probs has shape"),
    ("clf_fwd", dict(losses=None), ValueError, "losses is required"),
    ("clf_fwd", dict(x=np.zeros((2, 2, 2, 2), f32)), None, None),
    ("clf_bwd", dict(labels=None), ValueError, "labels is required"),
    ("adamw", dict(v=np.zeros(9, f32)), ValueError, "v has 9 elements"),
    ("adamw", dict(t=0), ValueError, "step must be >= 1"),
    ("latent", dict(norms=np.zeros(3, f32)), ValueError, "norms has shape"),
    ("latent", dict(g=np.zeros((2, 5), np.float16)), TypeError, "g must be float32"),
    ("latent", dict(g=np.zeros((2, 6), f32)), ValueError, "g has shape"),
    ("latent", dict(step=float("nan")), ValueError, "step must be finite"),
]


@pytest.mark.parametrize("op,over,exc,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_raise_clear_errors(op, over, exc, msg):
    if exc is None:          # controls: equivalent good arguments in another form must pass
        _call(op, **over)
        return
    with pytest.raises(exc, match=msg):
        _call(op, **over)


def test_read_only_output_is_refused():
    out = np.zeros((1, 2, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="maps is read-only"):
        _call("attn_fwd", maps=out)


def test_bad_stream_argument():
    with pytest.raises(TypeError, match="stream"):
        _C.latent_update(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), np.zeros(1, np.float32), 0.1, stream="x")


def test_bad_modes():
    with pytest.raises(ValueError, match="'bilinear' or 'area'"):
        _C.resize_maps_forward(np.zeros((4, 4), np.float32), np.zeros((2, 2), np.float32), "nearest")
    with pytest.raises(ValueError, match="'sum' or 'max'"):
        _C.normalize_maps_forward(np.zeros(4, np.float32), np.zeros(4, np.float32), "l2")


# ---- import and linking -------------------------------------------------------------------
@pytest.mark.parametrize("order", ["import torch, l2s", "import l2s, torch"])
def test_import_orders(order):
    code = f"{order}; from l2s import _C; print(_C.cuda_compiled(), _C.cuda_available())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_core_import_needs_neither_torch_nor_cublas():
    code = ("import sys, l2s._C, l2s; assert 'torch' not in sys.modules, 'torch imported'; "
            "maps = open('/proc/self/maps').read(); assert 'cublas' not in maps, 'cublas loaded at import'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: _C.empty((2, -1)), ValueError, "non-negative"),
    (lambda: _C.empty((2,), "float64"), ValueError, "dtype must be one of"),
    (lambda: _C.empty((2,), device="tpu"), ValueError, "device must be 'cpu' or 'cuda'"),
    (lambda: _C.empty(7), TypeError, "shape must be a sequence"),
    (lambda: _C.empty((1,) * 9), ValueError, "at most 8 dimensions"),
    (lambda: _C.classifier_sizes(CFG, 0), ValueError, "batch must be >= 1"),
    (lambda: _C.classifier_config(**{**FIELDS, "hidden1": 0}), ValueError, "hidden sizes"),
    (lambda: _C.classifier_config(**{**FIELDS, "n_steps": 0}), ValueError, "n_steps must be >= 1"),
    (lambda: _C.classifier_config(**{**FIELDS, "ln_eps": 0.0}), ValueError, "ln_eps"),
    (lambda: _C.classifier_config(**{**FIELDS, "n_relations": 1}), ValueError, "n_relations"),
    (lambda: _C.classifier_config(2, 4, 5, 3, 6, 5, 4, 0.1, 1e-5), TypeError, "positional"),
    (lambda: _C.classifier_config(**{**{k: v for k, v in FIELDS.items() if k != "n_maps"}, "n_mapz": 2}),
     TypeError, "'n_mapz' is an invalid keyword"),
    (lambda: _C.classifier_layout((2, 4, 5, 3, 6, 5, 4, 0.1, 1e-5)), TypeError, "config must be made by classifier_config"),
    (lambda: _C.classifier_layout("nope"), TypeError, "config must be made by classifier_config"),
    (lambda: _C.empty((2,)).__dlpack__(max_version=[1, 0]), TypeError, "max_version must be a tuple"),
    (lambda: _C.empty((2,)).__dlpack__(dl_device=[1, 0]), TypeError, "dl_device must be a tuple"),
])
def test_bad_arguments_to_sizes_layout_and_empty(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


_Z = np.zeros((2, 3), np.float32)
_NORMS = np.zeros(2, np.float32)


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: _C.latent_update(_Z, _Z, _NORMS), TypeError, r"latent_update\(\) missing required argument 'step' \(pos 4\)"),
    (lambda: _C.latent_update(_Z, _Z, _NORMS, 0.5, True, None, 7), TypeError, r"takes at most 6 arguments \(7 given\)"),
    (lambda: _C.latent_update(_Z, _Z, _NORMS, 0.5, steps=1), TypeError, "unexpected keyword argument 'steps'"),
    (lambda: _C.latent_update(_Z, _Z, _NORMS, 0.5, z=_Z), TypeError, "multiple values for argument 'z'"),
    (lambda: _C.latent_update(_Z, _Z, _NORMS, "0.5"), TypeError, "must be real number"),
    (lambda: _C.normalize_maps_forward(_Z, _Z, 3), TypeError, r"normalize_maps_forward\(\) argument 'mode' must be str"),
    (lambda: _C.normalize_maps_forward(_Z, _Z, "s\0um"), ValueError, "null character"),
    (lambda: _C.adamw_update(_Z, _Z, _Z, _Z, 1e-3, step=1.0), TypeError, "argument 'step' must be an integer"),
    (lambda: _C.adamw_update(_Z, _Z, _Z, _Z, 1e-3, step=2 ** 40), OverflowError, "'step' does not fit"),
])
def test_fast_argument_parsing_errors(call, exc, msg):
    """The ops parse vectorcall arguments themselves (no tuple or dict): the errors PyArg would give."""
    with pytest.raises(exc, match=msg):
        call()


def test_fast_argument_parsing_keywords_positions_and_defaults():
    z, g = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    by_kw, by_pos = z.copy(), z.copy()
    _C.latent_update(norms=_NORMS.copy(), step=np.float64(0.5), g=g, z=by_kw, normalize=0)   # any order, numpy scalar, int bool
    _C.latent_update(by_pos, g, _NORMS.copy(), 0.5, False)
    np.testing.assert_array_equal(by_kw, by_pos)
    np.testing.assert_array_equal(by_pos, z - 1.0)
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32) + 0.1
    y1, y2 = np.empty_like(x), np.empty_like(x)
    _C.normalize_maps_forward(x, y1)                                   # defaults: mode 'sum'
    _C.normalize_maps_forward(x, y2, mode="sum", eps=1e-8, stream=None)
    np.testing.assert_array_equal(y1, y2)


def test_cuda_status_says_why_no_device_is_usable(capsys):
    """The runtime's own reason (an old driver reads as 'driver version is insufficient') reaches
    `l2s info` and the cuda tests' skip reason instead of a silent 0 devices."""
    from l2s.__main__ import main
    status = _C.cuda_status()
    assert isinstance(status, str) and status
    assert (status == "ok") == bool(_C.cuda_available())
    if not _C.cuda_compiled():
        assert "without CUDA" in status
    assert main(["info"]) == 0
    assert f'"cuda_status": "{status}"' in capsys.readouterr().out

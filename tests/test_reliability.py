"""The boundary under hostile inputs: each defect a probe found, as a reproducer, and a seeded fuzz
run in a subprocess (a crash kills only the child, and fails the test)."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from l2s import _C
import l2s
from l2s.classifier import ClassifierConfig, RelationClassifier

import reproducers

HERE = Path(__file__).resolve().parent


def _reproduce(call: str, timeout: int = 300) -> None:
    """Run ``reproducers.<call>`` in a child process: a crash fails this test, not the suite."""
    r = subprocess.run([sys.executable, "-c", f"import reproducers; reproducers.{call}; print('ok')"],
                       capture_output=True, text=True, timeout=timeout, cwd=str(HERE))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (call, r.returncode, r.stderr[-2000:])


def test_fuzz_every_entry_point_in_a_subprocess():
    """3000 seeded calls (valid and hostile): exceptions are fine, crashes and wrong results are not."""
    r = subprocess.run([sys.executable, str(HERE / "fuzz_core.py"), "--calls", "3000", "--seed", "0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    calls, exceptions, mismatches = (int(v) for v in r.stdout.split()[1::2])
    assert calls == 3000 and mismatches == 0 and 0 < exceptions < calls


def test_resize_of_a_65536_square_map_does_not_overflow_its_index(tmp_path):
    _reproduce(f"resize_65536({str(tmp_path)!r})")


@pytest.mark.parametrize("name", list(reproducers.ALL))
def test_reproducer_in_a_child(name):
    """classifier_overflow, index_race, null_data, immutable_legacy, env_race (tests/reproducers.py)."""
    _reproduce(f"{name}()")


@pytest.mark.parametrize("field, value, msg", [
    ("hidden1", 2 ** 21, "hidden sizes"), ("n_relations", 2 ** 21, "n_relations"),
    ("map_pixels", 2 ** 23, "parameter count"),
])
def test_classifier_sizes_that_would_overflow_name_the_field(field, value, msg):
    fields = dict(n_maps=2, map_pixels=256, n_steps=50, step_dim=16, hidden1=256, hidden2=128, n_relations=4)
    with pytest.raises(ValueError, match=msg):
        _C.classifier_config(**{**fields, field: value})


def test_one_classifier_shared_by_threads_gives_the_single_thread_results(rng):
    model = RelationClassifier(ClassifierConfig(map_size=8, hidden1=32, hidden2=16, n_steps=10, step_dim=4), seed=3)
    xs = [rng.random((int(rng.integers(1, 9)), 2, 8, 8)).astype(np.float32) for _ in range(40)]
    steps = [np.full(len(x), 2, np.int32) for x in xs]
    labels = [np.zeros(len(x), np.int32) for x in xs]
    want = [model.loss_and_input_grad(x, l, s) for x, l, s in zip(xs, labels, steps)]
    got = [None] * len(xs)

    def work(offset):
        for _ in range(5):
            for i in range(offset, len(xs), 4):
                got[i] = model.loss_and_input_grad(xs[i], labels[i], steps[i])
    threads = [threading.Thread(target=work, args=(o,)) for o in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (l1, d1, p1), (l2, d2, p2) in zip(want, got):
        assert l1 == l2
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(p1, p2)


def test_big_endian_arrays_are_refused():
    q = np.ones((1, 1, 4, 2), ">f4")
    with pytest.raises(ValueError, match="q: array is in non-native byte order"):
        _C.attn_maps_forward(q, np.ones((1, 1, 3, 2), np.float32), np.array([[0]], np.int32),
                               np.zeros((1, 1, 4), np.float32), 0.5)


@pytest.mark.parametrize("scale", [-1.0, 0.0])
def test_non_positive_attention_scale_is_refused(scale):
    """The C path took the row max before scaling: q=1, k=[0, 100], scale=-1 gave [-2e-34, 1.0]."""
    q, k = np.ones((1, 1, 1, 1), np.float32), np.array([0.0, 100.0], np.float32).reshape(1, 1, 2, 1)
    with pytest.raises(ValueError, match="scale must be > 0"):
        _C.attn_maps_forward(q, k, np.array([[0], [1]], np.int32), np.zeros((1, 2, 1), np.float32), scale)


def test_nan_in_queries_or_keys_gives_nan_maps_and_gradients(rng):
    q = rng.standard_normal((1, 2, 6, 4)).astype(np.float32)
    k = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    q[0, 1, 3, 2] = np.nan
    maps = l2s.attn_maps_forward(q, k, [[1], [2, 3]])
    assert np.isnan(maps[0, :, 3]).all() and np.isfinite(np.delete(maps[0], 3, axis=1)).all()
    dq, dk = l2s.attn_maps_backward(q, k, [[1], [2, 3]], np.ones_like(maps))
    assert np.isnan(dq[0, :, 3]).any()
    k2 = k.copy()
    k2[0, 0, 4, 0] = np.nan                         # a NaN key: every query row of that head meets it
    assert np.isnan(l2s.attn_maps_forward(rng.standard_normal((1, 2, 6, 4)).astype(np.float32), k2, [[1]])).all()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupts_inside_a_producer_pass_through_untouched(exc):
    class Interrupting:
        def __dlpack__(self, stream=None, max_version=None):
            raise exc()

        def __dlpack_device__(self):
            return (1, 0)
    with pytest.raises(exc):
        _C.normalize_maps_forward(Interrupting(), np.zeros(4, np.float32))


def test_a_config_that_does_not_match_its_weights_is_refused_before_allocating(tmp_path):
    """hidden1 = 1e6 in the JSON used to allocate 3.9 GiB before the shape check."""
    import json
    model = RelationClassifier(ClassifierConfig(map_size=4, hidden1=8, hidden2=4))
    stem = model.save(tmp_path / "clf")
    cfg = json.loads(stem.with_suffix(".json").read_text())
    cfg["hidden1"] = 1_000_000
    stem.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"fc1.weight: F32 \(8, 48\) in the file"):
        RelationClassifier.load(stem)


def test_sanitizers_find_nothing(tmp_path):
    """scripts/sanitize.sh: l2s._C built with ASan + UBSan, the seeded fuzz (2 x 1000 calls) and every
    reproducer above run against it; any report aborts the child."""
    import shutil
    lib = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("gcc") else ""
    if not lib or not Path(lib).exists():
        pytest.skip("gcc with libasan is not installed")
    root = HERE.parent
    r = subprocess.run(["bash", str(root / "scripts" / "sanitize.sh"), "1000"], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "PYTHON": sys.executable,
                                         "L2S_SANITIZE_DIR": str(tmp_path)})
    assert r.returncode == 0 and "sanitizers: clean" in r.stdout, (r.stdout[-3000:], r.stderr[-3000:])


def test_a_read_only_mapping_behind_torch_is_never_written(tmp_path):
    """torch wraps a memmap opened with mode='r' without a read-only flag: writing into it used to
    segfault; the kernel is now asked first (in a child, so a regression kills only the child)."""
    path = tmp_path / "ro.f32"
    np.zeros(16, np.float32).tofile(path)
    code = (f"import warnings, numpy as np, torch\nfrom l2s import _C\n"
            f"warnings.simplefilter('ignore')\n"
            f"out = torch.from_numpy(np.memmap({str(path)!r}, dtype=np.float32, mode='r'))\n"
            f"try:\n    _C.normalize_maps_forward(np.ones(16, np.float32), out)\n"
            f"except ValueError as exc:\n    print('refused:', exc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "cannot be written" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])

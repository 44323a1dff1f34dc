"""csrc/parallel.c: the pool of threads the C ops share between calls — concurrent callers (the GIL
released), nested parallel loops, a forked child, and a changed thread count all finish with the
one-thread results."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np

import l2s


def _maps(seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, 8, 512, 40)).astype(np.float32)
    k = rng.standard_normal((2, 8, 77, 40)).astype(np.float32)
    return q, k


def _run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "L2S_NUM_THREADS": "2"})


def test_concurrent_callers_get_the_same_results():
    """Four Python threads at once: one is served by the pool, the others start their own threads."""
    inputs = [_maps(s) for s in range(4)]
    want = [l2s.attn_maps_forward(q, k, [[3], [5, 6]]) for q, k in inputs]
    got = [None] * 4

    def work(i):
        for _ in range(5):
            got[i] = l2s.attn_maps_forward(*inputs[i], [[3], [5, 6]])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_forked_child_runs_ops_on_a_pool_of_its_own():
    r = _run_child("""
        import os, numpy as np, l2s
        q = np.random.default_rng(0).standard_normal((1, 8, 1024, 40)).astype(np.float32)
        k = np.random.default_rng(1).standard_normal((1, 8, 77, 40)).astype(np.float32)
        want = l2s.attn_maps_forward(q, k, [[3]])                 # the parent's pool is running
        pid = os.fork()
        if pid == 0:
            ok = np.array_equal(l2s.attn_maps_forward(q, k, [[3]]), want)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert r.returncode == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)


def test_nested_loops_and_thread_counts_agree_with_one_thread():
    """The authors' network nests parallel products inside parallel attention heads."""
    code = """
        import numpy as np
        from l2s.authors import AuthorsClassifier
        cfg = {"d_model": 64, "map_size": 16, "num_timesteps": 4,
               "extractor": {"num_layers": 1, "nhead": 2, "dim_feedforward": 64, "layer_attn_nheads": 2},
               "classifier": {"num_layers": 1, "nhead": 2, "dim_feedforward": 32, "timestep_embedding_dim": 8}}
        clf = AuthorsClassifier.new(["a", "b", "c"], 96, 4, [1, 3], config=cfg)
        maps = np.random.default_rng(0).random((20, 2, 96, 16, 16)).astype(np.float32)
        rows = np.arange(20) % 4
        losses, dmaps, probs = clf.losses_and_grad(maps, rows % 3, rows)
        np.save("{out}", np.concatenate([probs.numpy().ravel(), dmaps.numpy().ravel()]))
    """
    outs = []
    for threads in ("1", "2", "5"):
        out = f"/tmp/l2s_nested_{os.getpid()}_{threads}.npy"
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code.replace("{out}", out))], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "L2S_NUM_THREADS": threads})
        assert r.returncode == 0, r.stderr
        outs.append(np.load(out))
        os.unlink(out)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-5, atol=1e-7)

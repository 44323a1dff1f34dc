"""l2s/map_shards.py: shards resume after a kill, split across ranks, and merge into the dataset a
single uninterrupted run makes, row for row."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from l2s.inversion import MapDataset
from l2s.map_shards import (ShardedMaps, load_shard, make_shards, shard_count, shard_done, shard_stem, shards_of,
                            write_manifest)

N_ITEMS, SHARD = 11, 3


def rows(first: int, stop: int, delay: float = 0.0) -> MapDataset:
    """Rows of items [first, stop) that depend on the item index only (as build_dataset's do)."""
    maps, labels, image = [], [], []
    for n in range(first, stop):
        time.sleep(delay)
        rng = np.random.default_rng(n)
        maps.append(rng.random((2, 2, 4, 4), dtype=np.float32))
        labels.append(np.full(2, n % 4, np.int32))
        image.append(np.full(2, n, np.int32))
    k = 2 * (stop - first)
    return MapDataset(np.concatenate(maps), np.concatenate(labels), np.zeros(k, np.int32), np.tile([0, 1], stop - first)
                      .astype(np.int8), np.concatenate(image), {"made_by": "rows"})


def _assert_same(a: MapDataset, b: MapDataset) -> None:
    for name in ("maps", "labels", "steps", "inversion", "image"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _uninterrupted(folder) -> MapDataset:
    make_shards(folder, N_ITEMS, SHARD, rows, progress=False)
    write_manifest(folder, N_ITEMS, SHARD, {"made_by": "rows"})
    return ShardedMaps(folder).load()


def test_shard_plan():
    assert shard_count(11, 3) == 4 and shard_count(12, 3) == 4 and shard_count(1, 64) == 1
    assert shards_of(7, 1, 3) == [1, 4] and shards_of(2, 2, 3) == []
    with pytest.raises(ValueError, match="rank 3"):
        shards_of(4, 3, 3)
    with pytest.raises(ValueError, match="shard_size"):
        shard_count(4, 0)


def test_ranks_merge_into_the_single_process_dataset(tmp_path):
    whole = _uninterrupted(tmp_path / "one")
    assert len(whole) == 2 * N_ITEMS and list(np.unique(whole.image)) == list(range(N_ITEMS))
    for rank in (1, 0):                                   # rank 1 first: the order of ranks does not matter
        make_shards(tmp_path / "two", N_ITEMS, SHARD, rows, rank=rank, world=2, progress=False)
    merged = write_manifest(tmp_path / "two", N_ITEMS, SHARD, {"made_by": "rows"})
    assert merged["total_rows"] == 2 * N_ITEMS and merged["n_shards"] == 4
    _assert_same(ShardedMaps(tmp_path / "two").load(), whole)


def test_a_missing_shard_blocks_the_manifest(tmp_path):
    make_shards(tmp_path, N_ITEMS, SHARD, rows, rank=0, world=2, progress=False)
    with pytest.raises(RuntimeError, match="2 of 4 shards are not finished"):
        write_manifest(tmp_path, N_ITEMS, SHARD, {})
    with pytest.raises(FileNotFoundError, match="unfinished"):
        ShardedMaps(tmp_path)
    with pytest.raises(FileNotFoundError, match="shard 1"):
        load_shard(tmp_path, 1)


KILLED_WORKER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_map_shards import rows, N_ITEMS, SHARD
from l2s.map_shards import make_shards
make_shards({folder!r}, N_ITEMS, SHARD, lambda a, b: rows(a, b, delay=0.15), progress=False)
"""


def test_a_worker_killed_mid_shard_resumes_to_the_same_rows(tmp_path):
    """SIGKILL a worker while it makes shard 1 (shard 0 done, a stale temporary file of shard 1 in
    place), rerun: nothing lost, nothing counted twice, equal to an uninterrupted run."""
    folder = tmp_path / "killed"
    code = KILLED_WORKER.format(tests=str(__import__("pathlib").Path(__file__).parent), folder=str(folder))
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while not shard_done(folder, 0) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)                                      # well inside shard 1 (3 items x 0.15 s)
    child.kill()
    child.wait()
    assert shard_done(folder, 0) and not shard_done(folder, 1)
    stale = shard_stem(folder, 1).parent / ".shard-00001.safetensors.999.tmp"
    stale.write_bytes(b"half a shard")                   # what a kill during the write leaves
    before = shard_stem(folder, 0).with_suffix(".safetensors").stat().st_mtime_ns
    made = make_shards(folder, N_ITEMS, SHARD, rows, progress=False)
    assert made == [1, 2, 3] and not stale.exists()      # the finished shard is kept as it was
    assert shard_stem(folder, 0).with_suffix(".safetensors").stat().st_mtime_ns == before
    write_manifest(folder, N_ITEMS, SHARD, {"made_by": "rows"})
    _assert_same(ShardedMaps(folder).load(), _uninterrupted(tmp_path / "whole"))
    info = json.loads(shard_stem(folder, 3).with_suffix(".json").read_text())
    assert info["items"] == [9, 11] and info["rows"] == 4


def test_streaming_reads_one_shard_at_a_time(tmp_path):
    _uninterrupted(tmp_path)
    data = ShardedMaps(tmp_path)
    sizes = [len(s) for s in data.iter_shards([3, 0])]
    assert sizes == [4, 6] and len(data) == 22 and data.meta == {"made_by": "rows"}


def test_training_streams_a_split_of_the_shards(tmp_path):
    """split_shards: every row on one side, no image on both, positive-only filter; the classifier
    trains from the shards (one in memory at a time) and reports the rows it saw."""
    from l2s.classifier import ClassifierConfig
    from l2s.train_classifier import accuracy, split_shards, train_classifier
    _uninterrupted(tmp_path)
    data = ShardedMaps(tmp_path)
    data.meta.update(map_size=4, relations=["left of", "right of", "above", "below"])
    train, val = split_shards(data, 0.3, seed=1)
    tr, va = (np.concatenate([p.image for p in s.parts()]) for s in (train, val))
    assert len(tr) + len(va) == len(data) and not set(tr) & set(va) and len(set(va)) == 3
    pos, _ = split_shards(data, 0.3, seed=1, positive_only=True)
    assert len(pos) == len(train) // 2
    clf, hist = train_classifier(train, val, ClassifierConfig(map_size=4, hidden1=8, hidden2=8, n_steps=4, step_dim=2,
                                                              relations=tuple(data.meta["relations"])),
                                 epochs=3, batch=4, progress=False)
    assert clf.config.meta["train_rows"] == len(train) and 0 <= accuracy(clf, val) <= 1
    assert len(hist.val_accuracy) == 3

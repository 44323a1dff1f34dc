"""l2s/classifier_data.py and `l2s train-classifier --pipeline`: tiny random SD, SDXL and Flux
pipelines saved to folders and opened by path, box folders written here; bad inputs end in one
clear line; the data split across 2 processes (torchrun, gloo) equals the single-process data."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from l2s.__main__ import main
from l2s.classifier_data import make_map_dataset
from l2s.data_spec import DataSpec, parse_data_spec
from l2s.datasets import box_folder_refs
from l2s.inversion import MapInverter, build_dataset
from l2s.map_shards import ShardedMaps
from l2s.testing import tiny_flux_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline

BUILDERS = {"sd": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline, "flux": tiny_flux_pipeline}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    for name, build in BUILDERS.items():
        build(root / f"tok-{name}").save_pretrained(root / name)
    return root


def _load(folder):
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_boxes(folder: Path, n: int = 4) -> Path:
    """Images 64x48 with a red "cat" box and a blue "dog" box side by side: even images cat left of
    dog, odd ones cat right of dog."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        img = np.full((48, 64, 3), 230, np.uint8)
        cat, dog = ((4, 10, 24, 40), (40, 12, 60, 38)) if i % 2 == 0 else ((40, 10, 60, 40), (4, 12, 24, 38))
        img[cat[1]:cat[3], cat[0]:cat[2]] = (200, 30, 30)
        img[dog[1]:dog[3], dog[0]:dog[2]] = (30, 30, 200)
        Image.fromarray(img).save(folder / f"img{i}.png")
        entries.append({"image": f"img{i}.png", "objects": [{"name": "cat", "box": list(cat)},
                                                             {"name": "dog", "box": list(dog)}]})
    (folder / "boxes.json").write_text(json.dumps(entries))
    return folder


def _train_args(pipeline, boxes, out, *extra):
    return ["train-classifier", "--pipeline", str(pipeline), "--data", f"boxes:{boxes}", "--out", str(out),
            "--inference-steps", "4", "--read-steps", "1-2", "--epochs", "2", "--shard-size", "3", *extra]


def test_train_on_a_pipeline_folder_then_steer_it(folders, tmp_path, capsys):
    boxes = write_boxes(tmp_path / "boxes")
    assert main(_train_args(folders / "sd", boxes, tmp_path / "run")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 8 * 2 * 2 and report["shards"] == 3          # 8 pairs x 2 prompts x 2 steps
    manifest = json.loads((tmp_path / "run" / "maps" / "manifest.json").read_text())
    meta = manifest["meta"]
    assert meta["family"] == "unet" and meta["image_size"] == 32 and meta["map_size"] == 16 and meta["dual"]
    data = ShardedMaps(tmp_path / "run" / "maps").load()
    assert data.maps.shape == (32, 2, 16, 16) and np.allclose(data.maps.sum((-1, -2)), 1, atol=1e-2)
    refs = box_folder_refs(boxes)                   # item n of the dataset is refs[n]
    for row in range(len(data)):
        ref = refs[int(data.image[row])]
        assert meta["relations"][int(data.labels[row])] == ref.relation
        image_index = int(ref.path.stem[3:])
        want = {("cat", 0): "left of", ("dog", 0): "right of", ("cat", 1): "right of", ("dog", 1): "left of"}
        assert ref.relation == want[(ref.subject, image_index % 2)]
    from l2s import load_classifier
    from l2s.steer import Steerer
    clf = load_classifier(tmp_path / "run" / "classifier")
    assert clf.meta["layers"] == meta["layers"] and clf.meta["pipeline"] == str(folders / "sd")
    pipe = _load(folders / "sd")
    with Steerer(pipe, clf, "a cat to the left of a dog", steps=[0, 1], iterations=1) as steer:
        image = steer.generate(pipe, "a cat to the left of a dog", num_inference_steps=2, output_type="np").images[0]
    assert np.isfinite(image).all() and len(steer.records) >= 2


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_sdxl_and_flux_folders_give_maps_of_the_metadata_shape(folders, tmp_path, name):
    boxes = write_boxes(tmp_path / "boxes", n=2)
    pipe = _load(folders / name)
    data = make_map_dataset(pipe, tmp_path / "maps", DataSpec("boxes", (str(boxes),)), [1, 2], num_inference_steps=4,
                            size=32, shard_size=2, progress=False).load()
    assert data.maps.shape == (4 * 2 * 2, 2, data.meta["map_size"], data.meta["map_size"])
    assert data.meta["family"] == ("flux" if name == "flux" else "unet")
    assert np.isfinite(data.maps).all() and np.allclose(data.maps.sum((-1, -2)), 1, atol=1e-2)
    if name == "flux":
        assert data.meta["inversion_mode"] == "noise"          # straight-line noising for rectified flow
        with pytest.raises(ValueError, match="rectified-flow"):
            MapInverter(pipe, mode="fixed-point")


def test_fixed_point_inversion_reconstructs_better_and_the_floor_drops(folders, tmp_path):
    """On a UNet damped so that the fixed point exists (output x 0.3), each iteration brings the
    reconstruction closer (measured 15.0 / 16.5 / 22.0 / 26.3 dB for 0 / 1 / 3 / 5 iterations);
    a PSNR floor above an image's reconstruction drops the image, both of its prompts."""
    pipe = _load(folders / "sd")
    with torch.no_grad():
        pipe.unet.conv_out.weight.mul_(0.3)
        pipe.unet.conv_out.bias.mul_(0.3)
    example = box_folder_refs(write_boxes(tmp_path / "boxes", n=1))[0].load(32)
    psnrs = []
    for iterations in (0, 5):
        with MapInverter(pipe, num_inference_steps=6, mode="fixed-point", image_size=32,
                         fixed_point_iterations=iterations) as inv:
            inv.read(inv.encode(example.image[None]), "a cat left of a dog", [2, 3])
            psnrs.append(inv.last_psnr)
    assert psnrs[1] > psnrs[0] + 5, psnrs
    floor = (psnrs[0] + psnrs[1]) / 2
    for iterations, kept in ((0, False), (5, True)):
        with MapInverter(pipe, num_inference_steps=6, mode="fixed-point", image_size=32, psnr_floor=floor,
                         fixed_point_iterations=iterations) as inv:
            ds = build_dataset(inv, [example], [2, 3], progress=False)
        assert (len(ds) == 2 * 2) == kept and ds.meta["dropped_psnr"] == ([] if kept else [0])


def test_gqa_scene_graphs_through_a_pipeline(folders, tmp_path):
    """gqa:SCENE_GRAPHS.json,IMAGE_DIR: relations from the boxes (a box overrunning the image is
    clipped), the images read shard by shard."""
    (tmp_path / "images").mkdir()
    graphs = {"7": {"width": 60, "height": 40, "objects": {
        "a": {"name": "dog", "x": 2, "y": 10, "w": 15, "h": 20},
        "b": {"name": "teddy bear", "x": 40, "y": 12, "w": 22, "h": 20}}}}      # 2 px past the right edge
    (tmp_path / "g.json").write_text(json.dumps(graphs))
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "images" / "7.jpg")
    spec = parse_data_spec(f"gqa:{tmp_path}/g.json,{tmp_path}/images")
    data = make_map_dataset(_load(folders / "sd"), tmp_path / "maps", spec, [1], num_inference_steps=4,
                            progress=False).load()
    rel = [data.meta["relations"][i] for i in data.labels]
    assert len(data) == 2 * 2 and sorted(set(rel)) == ["left of", "right of"]


def test_a_rerun_with_other_settings_is_refused(folders, tmp_path):
    boxes = write_boxes(tmp_path / "boxes", n=2)
    pipe = _load(folders / "sd")
    spec = DataSpec("boxes", (str(boxes),))
    make_map_dataset(pipe, tmp_path / "maps", spec, [1], num_inference_steps=4, shard_size=8, progress=False)
    with pytest.raises(ValueError, match="other settings .*step_indices"):
        make_map_dataset(pipe, tmp_path / "maps", spec, [2], num_inference_steps=4, shard_size=8, progress=False)


def _one_line_error(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:                            # argparse: checked while parsing
        rc = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "torchvision" not in line]
    assert rc != 0 and len(err) == 1, err
    return err[0]


def test_bad_inputs_name_the_file_or_field(folders, tmp_path, capsys):
    boxes = write_boxes(tmp_path / "boxes", n=2)
    entries = json.loads((boxes / "boxes.json").read_text())

    def variant(name, change):
        folder = tmp_path / name
        shutil.copytree(boxes, folder)
        data = json.loads(json.dumps(entries))
        change(data)
        (folder / "boxes.json").write_text(json.dumps(data))
        return folder

    missing = variant("missing", lambda d: d[1].update(image="gone.png"))
    line = _one_line_error(_train_args(folders / "sd", missing, tmp_path / "o1"), capsys)
    assert "entry 1" in line and "gone.png" in line and "missing" in line
    outside = variant("outside", lambda d: d[0]["objects"][1].update(box=[40, 12, 90, 38]))
    line = _one_line_error(_train_args(folders / "sd", outside, tmp_path / "o2"), capsys)
    assert "entry 0 object 1 ('dog')" in line and "outside the 64x48 image" in line
    empty = variant("empty", lambda d: [o.update(name="cat") for e in d for o in e["objects"]])
    line = _one_line_error(_train_args(folders / "sd", empty, tmp_path / "o3"), capsys)
    assert "gives no usable example" in line
    line = _one_line_error(["train-classifier", "--pipeline", str(folders / "sd"), "--data", f"boxes:{tmp_path}"], capsys)
    assert "--data" in line and "boxes.json does not exist" in line
    line = _one_line_error(["train-classifier", "--pipeline", str(folders / "sd"), "--data", "coco:x"], capsys)
    assert "must be boxes:FOLDER, gqa:SCENE_GRAPHS.json,IMAGE_DIR, shapes or shapes:LINE_FRACTION" in line
    assert not (tmp_path / "o1" / "maps" / "manifest.json").exists()      # nothing half-made is presented as done


def test_unknown_relations_and_a_pipeline_without_cross_attention(folders, tmp_path, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    example = box_folder_refs(write_boxes(tmp_path / "boxes", n=1))[0].load(32)
    with MapInverter(_load(folders / "sd"), num_inference_steps=4) as inv:
        with pytest.raises(ValueError, match=r"unknown relation\(s\) \['left of'\]"):
            build_dataset(inv, [example], [1], relations=["above", "below"], progress=False)
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    line = _one_line_error(_train_args(tmp_path / "ddpm", tmp_path / "boxes", tmp_path / "o"), capsys)
    assert "UNet2DModel has no cross-attention layer" in line


def test_a_shapes_pipeline_folder_trains_the_shapes_classifier_with_its_schedule(tmp_path, capsys):
    """`--model FOLDER` of a fine-tuned shapes model (a ShapesPipeline folder) is the shapes world: the
    classifier records the tuned steering schedule (without it, steering would fall back to generic
    defaults) and the folder it was made for; line examples (`--data shapes:F`) are accepted."""
    pytest.importorskip("l2s_shapes", reason="the shapes world is not installed")
    from l2s_shapes.pipeline import build_pipeline
    from l2s_shapes.relation_classifier import SHAPES_STEERING
    build_pipeline(seed=0, block_out_channels=(8, 8, 16, 16), attention_head_dim=4,
                   norm_num_groups=4).save_pretrained(tmp_path / "ft")
    assert main(["train-classifier", "--model", str(tmp_path / "ft"), "--data", "shapes:0.5", "--out", str(tmp_path / "o"),
                 "--examples", "8", "--shard-size", "4", "--read-steps", "1-2", "--epochs", "2"]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "o" / "classifier" / "config.json").read_text())["meta"]
    assert meta["steering"] == SHAPES_STEERING and meta["pipeline"] == str(tmp_path / "ft")
    assert json.loads((tmp_path / "o" / "maps" / "settings.json").read_text())["data"] == "shapes:0.5"


def test_data_spec_parsing(tmp_path):
    (tmp_path / "g.json").write_text("{}")
    assert parse_data_spec("shapes") == DataSpec("shapes")
    assert parse_data_spec("shapes:0.25") == DataSpec("shapes", ("0.25",)) and DataSpec("shapes", ("0.25",)).text() == "shapes:0.25"
    assert parse_data_spec("shapes:0.25").line_fraction == 0.25 and parse_data_spec("shapes").line_fraction == 0.0
    assert parse_data_spec(f"gqa:{tmp_path}/g.json,{tmp_path}").paths == (f"{tmp_path}/g.json", str(tmp_path))
    for bad, message in (("gqa:nope.json,x", "do not exist"), (f"gqa:{tmp_path}/g.json", "must be"),
                         ("shapes:x", "takes a share"), ("shapes:1.5", "takes a share"), ("boxes:", "must be")):
        with pytest.raises(ValueError, match=message):
            parse_data_spec(bad)


@pytest.mark.slow
def test_two_processes_make_the_single_process_dataset(folders, tmp_path):
    """`torchrun --nproc_per_node 2 -m l2s train-classifier ...` (gloo on the CPU): each rank makes
    its shards, rank 0 writes the manifest and trains; the merged rows equal a one-process run's
    (labels, steps, images exactly; maps to float16 rounding)."""
    pytest.importorskip("accelerate")
    boxes = write_boxes(tmp_path / "boxes")
    args = _train_args(folders / "sd", boxes, tmp_path / "two")[1:] + ["--shard-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29517", "-m", "l2s", "train-classifier", *args], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    from l2s.map_shards import ShardedMaps
    two = ShardedMaps(tmp_path / "two" / "maps")
    assert r.stdout.count('"saved"') == 1                # rank 0 alone trains and reports
    report, _ = json.JSONDecoder().raw_decode(r.stdout[r.stdout.index("{"):])
    assert report["shards"] == two.n_shards == 4 and report["rows"] == len(two) == 32
    one = make_map_dataset(_load(folders / "sd"), tmp_path / "one", DataSpec("boxes", (str(boxes),)), [1, 2],
                           num_inference_steps=4, shard_size=2, progress=False)
    a, b = two.load(), one.load()
    for name in ("labels", "steps", "inversion", "image"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # the maps agree to float16 rounding: torch's CPU kernels may sum in another order in another
    # process (on the shapes model 4% of rows moved by one float16 step, 7.6e-6)
    np.testing.assert_allclose(a.maps, b.maps, rtol=2e-3, atol=1e-5)


def _blob_stacks(n: int, channels: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Stacks [n, 2, C, 16, 16]: each object a Gaussian blob (noisy per channel), the subject placed
    left of / right of / above / below the object as the label says."""
    yy, xx = np.mgrid[0:16, 0:16]
    offsets = {0: (0, -5), 1: (0, 5), 2: (-5, 0), 3: (5, 0)}       # (dy, dx) of the subject: RELATIONS' order
    labels = rng.integers(0, 4, n)
    maps = np.zeros((n, 2, channels, 16, 16), np.float32)
    for i, r in enumerate(labels):
        cy, cx = rng.uniform(6, 10, 2)
        for obj, (dy, dx) in enumerate((offsets[int(r)], (0, 0))):
            blob = np.exp(-((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / 6.0)
            noisy = blob[None] + 0.05 * rng.random((channels, 16, 16))
            maps[i, obj] = noisy / noisy.sum((-1, -2), keepdims=True)
    return maps, labels.astype(np.int32)


def test_the_transformer_kind_learns_relations_from_stacks():
    from l2s.inversion import MapDataset
    from l2s.train_classifier import accuracy, train_transformer
    rng = np.random.default_rng(0)
    meta = {"map_kind": "stack", "input_channels": 6, "num_inference_steps": 10, "step_indices": [2, 3],
            "relations": ["left of", "right of", "above", "below"], "map_size": 16}

    def rows(n):
        maps, labels = _blob_stacks(n, 6, rng)
        return MapDataset(maps, labels, rng.integers(2, 4, n).astype(np.int32), np.zeros(n, np.int8),
                          np.arange(n, dtype=np.int32), dict(meta))
    train, val = rows(384), rows(128)
    clf, hist = train_transformer(train, val, epochs=8, lr=1e-3, progress=False)
    assert accuracy(clf, val) >= 0.9, hist.val_accuracy           # chance is 0.25
    assert clf.meta["val_accuracy"] == max(hist.val_accuracy) and clf.meta["step_mapping"] == [2, 3]


def test_train_the_transformer_kind_on_a_pipeline_then_steer_with_it(folders, tmp_path, capsys):
    from l2s import load_classifier
    from l2s.authors import AuthorsClassifier, authors_logits
    from l2s.steer import Steerer
    boxes = write_boxes(tmp_path / "boxes", n=2)
    assert main(_train_args(folders / "sd", boxes, tmp_path / "run", "--kind", "transformer")) == 0
    report = json.loads(capsys.readouterr().out)
    clf = load_classifier(report["saved"])
    assert isinstance(clf, AuthorsClassifier) and report["saved"].endswith("transformer")
    stacks = ShardedMaps(tmp_path / "run" / "stacks").load()
    C = clf.meta["input_channels"]
    assert stacks.maps.shape == (report["rows"], 2, C, 16, 16) and C == 7 * 8   # 7 cross-attention layers x 8 heads
    x = torch.from_numpy(stacks.maps[:3])
    want = torch.softmax(authors_logits(clf.params, clf.config, x, torch.as_tensor(stacks.steps[:3]).long()), -1)
    torch.testing.assert_close(clf.forward(x, stacks.steps[:3]), want.detach())
    pipe = _load(folders / "sd")
    with Steerer(pipe, clf, "a cat to the left of a dog", steps=[0, 1], iterations=1) as steer:
        image = steer.generate(pipe, "a cat to the left of a dog", num_inference_steps=4, output_type="np").images[0]
    assert np.isfinite(image).all() and len(steer.records) >= 2


def test_the_attribute_class(folders, tmp_path, capsys):
    """--attributes: an object's "attributes" give "a {attribute} {object}" rows labelled "is",
    read with the attribute's and the object's own tokens, positive prompt only; a malformed list
    is named."""
    from l2s.inversion import attribute_tokens
    boxes = write_boxes(tmp_path / "boxes", n=2)
    entries = json.loads((boxes / "boxes.json").read_text())
    entries[0]["objects"][0]["attributes"] = ["red", "small"]
    (boxes / "boxes.json").write_text(json.dumps(entries))
    refs = box_folder_refs(boxes, attributes=True)
    assert [(r.subject, r.relation, r.object) for r in refs if r.relation == "is"] == [("red", "is", "cat"),
                                                                                         ("small", "is", "cat")]
    tok = _load(folders / "sd").tokenizer
    ids = tok("a red cat")["input_ids"]
    groups = attribute_tokens(tok, "red", "cat")
    assert [tok.decode([ids[i] for i in g]).strip() for g in groups] == ["red", "cat"]
    assert main(_train_args(folders / "sd", boxes, tmp_path / "run", "--attributes")) == 0
    report = json.loads(capsys.readouterr().out)
    data = ShardedMaps(tmp_path / "run" / "maps").load()
    names = [data.meta["relations"][i] for i in data.labels]
    assert data.meta["relations"][-1] == "is" and names.count("is") == 2 * 2       # 2 attributes x 2 steps, no twin
    assert report["rows"] == 4 * 2 * 2 + 4
    from l2s import load_classifier
    assert load_classifier(report["saved"]).config.relations[-1] == "is"
    entries[1]["objects"][1]["attributes"] = "blue"
    (boxes / "boxes.json").write_text(json.dumps(entries))
    line = _one_line_error(_train_args(folders / "sd", boxes, tmp_path / "o", "--attributes"), capsys)
    assert "entry 1 object 1" in line and "attributes must be a list of words" in line

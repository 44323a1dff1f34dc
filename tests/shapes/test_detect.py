"""shapes/l2s_shapes/detect.py: exact recovery on rendered scenes, and the prompt judge's failure kinds."""
import numpy as np
import pytest

from l2s.geneval import OPPOSITE
from l2s_shapes.detect import detect, judge_prompt, parse_object_phrase
from l2s_shapes.scenes import COLOURS, generate_scene, render_shape_mask


def test_recovers_every_object_of_rendered_scenes():
    for seed in range(150):
        sc = generate_scene(seed)
        dets = detect(sc.image)
        assert sorted((d.colour, d.shape) for d in dets) == sorted((o.colour, o.shape) for o in sc.objects), seed
        for obj, mask in zip(sc.objects, sc.masks):
            d = next(d for d in dets if (d.colour, d.shape) == (obj.colour, obj.shape))
            rows, cols = np.nonzero(mask)                         # the ground truth at pixel level
            truth = (cols.min() / 64, rows.min() / 64, (cols.max() + 1) / 64, (rows.max() + 1) / 64)
            # anti-aliased edge pixels on a textured background may fall either way: one pixel at most
            assert np.abs(np.array(d.box) - np.array(truth)).max() <= 1 / 64 + 1e-9, (seed, d.box, truth)


def test_judge_correct_misplaced_missing():
    sc = next(s for s in (generate_scene(i, relational_fraction=1.0) for i in range(50)) if s.relations)
    objs = [(o.colour, o.shape) for o in sc.objects]
    assert judge_prompt(sc.image, objs, sc.relations).failure == "correct"
    flipped = [(s, OPPOSITE[r], o) for s, r, o in sc.relations]
    res = judge_prompt(sc.image, objs, flipped)
    assert res.failure == "misplaced" and not any(res.relations_hold)
    absent = next((c, s) for c in COLOURS for s in ("circle", "square") if (c, s) not in objs)
    res = judge_prompt(sc.image, [objs[0], absent], [(0, "left of", 1)])
    assert res.failure == "missing" and res.found[1] is None


def test_fused_blob_is_reported_as_fused():
    """A circle and a triangle drawn overlapping in one colour make a blob that matches no template."""
    img = np.full((64, 64, 3), 230.0)
    for shape, box in (("circle", (0.2, 0.3, 0.5, 0.6)), ("triangle", (0.4, 0.35, 0.7, 0.65))):
        cover = render_shape_mask(shape, box, 64)[..., None]
        img = img * (1 - cover) + np.array(COLOURS["red"]) * cover
    res = judge_prompt(img.astype(np.uint8), [("red", "circle"), ("red", "triangle")], [(0, "left of", 1)])
    assert res.failure == "fused", [(d.shape, round(d.shape_iou, 2)) for d in res.detections]


def test_largest_instance_stands_in():
    img = np.full((64, 64, 3), 230.0)
    for box in ((0.05, 0.05, 0.2, 0.2), (0.6, 0.6, 0.95, 0.95)):
        cover = render_shape_mask("square", box, 64)[..., None]
        img = img * (1 - cover) + np.array(COLOURS["blue"]) * cover
    res = judge_prompt(img.astype(np.uint8), [("blue", "square")], [])
    assert res.found[0].box[0] > 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[S, S, 3\]"):
        detect(np.zeros((4, 5, 3), np.uint8))
    assert parse_object_phrase("Red Circle") == ("red", "circle")
    with pytest.raises(ValueError, match="colour"):
        parse_object_phrase("teddy bear")

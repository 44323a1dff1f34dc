"""shapes/l2s_shapes/scenes.py: determinism, masks vs boxes, captions and their relational fraction."""
import numpy as np
import pytest

from l2s.geneval import relation_holds
from l2s_shapes.scenes import COLOURS, SHAPES, generate_scene, heldout_pairs, render_shape_mask, reverse_relations, \
    straight_relations


def test_vocabulary_size():
    assert len(SHAPES) >= 3 and len(COLOURS) >= 6


def test_seeded_and_varied():
    a, b, c = generate_scene(7), generate_scene(7), generate_scene(8)
    assert np.array_equal(a.image, b.image) and a.caption == b.caption
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == (64, 64, 3)


def test_masks_fill_their_boxes():
    for seed in range(30):
        sc = generate_scene(seed)
        assert 2 <= len(sc.objects) <= 3 and len({o.name for o in sc.objects}) == len(sc.objects)
        for obj, mask in zip(sc.objects, sc.masks):
            rows, cols = np.nonzero(mask)
            x0, y0, x1, y1 = (np.array(obj.box) * 64)
            assert abs(cols.min() - x0) <= 1.5 and abs(cols.max() + 1 - x1) <= 1.5
            assert abs(rows.min() - y0) <= 1.5 and abs(rows.max() + 1 - y1) <= 1.5
        assert not (sc.masks.sum(0) > 1).any()                      # objects never overlap


@pytest.mark.parametrize("shape,fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5),
                                        ("diamond", 0.5), ("cross", 5 / 9)])
def test_shape_templates_have_their_area(shape, fill):
    cover = render_shape_mask(shape, (0.0, 0.0, 1.0, 1.0), 64)
    assert abs(cover.mean() - fill) < 0.01


def test_captions_mostly_without_relations():
    scenes = [generate_scene(s, relational_fraction=0.1) for s in range(600)]
    relational = [sc for sc in scenes if sc.relations]
    assert 0.04 < len(relational) / len(scenes) < 0.16
    plain = [sc for sc in scenes if not sc.relations]
    assert all(" and " in sc.caption for sc in plain)
    for sc in relational:                                           # stated relations are true
        for s, rel, o in sc.relations:
            assert relation_holds(sc.objects[s].box, sc.objects[o].box, rel)
            assert rel in sc.caption
        assert len(sc.relations) == len(sc.objects) - 1             # a chain over all objects


def test_heldout_pairs_never_in_relational_captions():
    held = heldout_pairs(8)
    assert len(held) == 8
    for s in range(400):
        sc = generate_scene(s, relational_fraction=1.0, heldout=held)
        if sc.relations:
            assert not any((o.colour, o.shape) in held for o in sc.objects)


def test_line_layouts_make_straight_chains():
    """Every line layout has an order (A, B, C) with the same relation twice, inside the image, no overlap."""
    from l2s_shapes.scenes import LINE_SIDES
    kinds = set()
    for seed in range(200):
        sc = generate_scene(seed, n_objects=3, line=True)
        boxes = [o.box for o in sc.objects]
        assert all(0.0 <= v <= 1.0 for b in boxes for v in b)
        assert all(LINE_SIDES[0] <= b[2] - b[0] <= LINE_SIDES[1] for b in boxes)
        assert not (sc.masks.sum(0) > 1).any()
        straight = straight_relations(boxes)
        assert straight, boxes
        kinds.add(frozenset(straight))
    assert {frozenset({"left of", "right of"}), frozenset({"above", "below"})} <= kinds   # rows and columns both made


def test_line_is_off_by_default_and_changes_only_placement():
    plain, line = generate_scene(11, n_objects=3), generate_scene(11, n_objects=3, line=True)
    assert plain.caption.count(" a ") == line.caption.count(" a ") and len(line.objects) == 3
    assert [o.box for o in plain.objects] != [o.box for o in line.objects]
    assert np.array_equal(generate_scene(11, n_objects=3, line=False).image, plain.image)   # the default is off


def test_relation_examples_line_fraction_draws_named_pairs_from_lines():
    """Line examples: three objects drawn, two named (not held out), their relation one of the four;
    0 keeps the shipped classifier's examples; a share outside [0, 1] is refused."""
    from l2s_shapes.scenes import relation_examples
    palette = {tuple(int(round(v)) for v in c) for c in COLOURS.values()}

    def colours(ex):                                       # the object colours an image shows (exact pixels)
        return {tuple(int(v) for v in c) for c in np.unique(ex.image.reshape(-1, 3), axis=0)} & palette

    plain, again = relation_examples(12, seed=4), relation_examples(12, seed=4, line_fraction=0.0)
    assert all(np.array_equal(a.image, b.image) and (a.subject, a.relation, a.object) == (b.subject, b.relation, b.object)
               for a, b in zip(plain, again))
    held = heldout_pairs()
    counts = {}
    for share in (0.0, 0.5, 1.0):
        examples = relation_examples(60, seed=4, line_fraction=share)
        for ex in examples:
            assert tuple(ex.subject.split()) not in held and tuple(ex.object.split()) not in held
            named = {tuple(int(round(v)) for v in COLOURS[n.split()[0]]) for n in (ex.subject, ex.object)}
            assert named <= colours(ex)
        assert len({ex.relation for ex in examples}) == 4
        counts[share] = sum(len(colours(ex)) == 3 for ex in examples)        # only a third object makes three
    assert counts[0.0] == 0 and 0 < counts[0.5] < counts[1.0], counts
    with pytest.raises(ValueError, match="line_fraction"):
        relation_examples(2, seed=0, line_fraction=1.5)


def test_straight_relations_reads_geneval_twice_in_one_order():
    row = [(0.02, 0.4, 0.22, 0.6), (0.4, 0.4, 0.6, 0.6), (0.78, 0.4, 0.98, 0.6)]
    assert straight_relations(row) == {"left of", "right of"}
    corner = [(0.02, 0.02, 0.22, 0.22), (0.78, 0.02, 0.98, 0.22), (0.02, 0.78, 0.22, 0.98)]   # an L: no line
    assert straight_relations(corner) == set()


def test_reverse_relations_swaps_every_phrase_and_only_those():
    assert reverse_relations("a red circle left of a blue square") == "a red circle right of a blue square"
    assert (reverse_relations("a cyan cross above a red circle and a red circle right of a blue square")
            == "a cyan cross below a red circle and a red circle left of a blue square")
    assert reverse_relations("a photo of a red circle and a blue square") is None

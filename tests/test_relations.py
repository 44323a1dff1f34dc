"""l2s/relations.py: the one relation table every part derives from."""
from l2s import geneval, prompts
from l2s.baselines import CentroidLoss
from l2s.relations import BY_NAME, OPPOSITE, PHRASES, RELATIONS, TABLE, relation


def test_the_table_is_consistent():
    assert RELATIONS == ("left of", "right of", "above", "below")
    for r in TABLE:
        opp = BY_NAME[r.opposite]
        assert opp.opposite == r.name and opp.axis == r.axis and opp.sign == -r.sign
        assert r.name in r.phrasings
    assert OPPOSITE["above"] == "below" and relation("left of").direction == (-1.0, 0.0)


def test_every_part_reads_the_table():
    assert geneval.RELATIONS is RELATIONS and geneval.OPPOSITE is OPPOSITE
    assert prompts.RELATION_PHRASES is PHRASES
    assert CentroidLoss().relations == RELATIONS
    for r in TABLE:                                  # GenEval's rule follows axis and sign
        dx, dy = r.direction
        a, b = (0.5 + 0.3 * dx, 0.5 + 0.3 * dy), (0.5, 0.5)
        box = lambda c: (c[0] - 0.05, c[1] - 0.05, c[0] + 0.05, c[1] + 0.05)
        assert geneval.relations_between(box(a), box(b)) == {r.name}
        assert [t.relation for t in prompts.parse_prompt(f"a dog {r.phrasings[-1]} a cat").triplets] == [r.name]

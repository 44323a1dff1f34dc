"""l2s/prompts.py: relation phrasings, chains, token indices in real tokenizers, bad input."""
import pytest

from l2s.prompts import PromptParseError, make_triplets, parse_prompt
from l2s.shapes.model import build_tokenizer
from l2s.testing import write_clip_tokenizer


@pytest.fixture(scope="module")
def clip_tok(tmp_path_factory):
    return write_clip_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("prompt, expected", [
    # GenEval position prompts
    ("a photo of a dog right of a teddy bear", ["dog | right of | teddy bear"]),
    ("a photo of an umbrella left of a fire hydrant", ["umbrella | left of | fire hydrant"]),
    ("a photo of a cat above a couch", ["cat | above | couch"]),
    ("a photo of a bench below a kite", ["bench | below | kite"]),
    # T2I-CompBench spatial prompts
    ("a bird on the left of a bicycle", ["bird | left of | bicycle"]),
    ("a man on the right of a car", ["man | right of | car"]),
    ("a lamp on top of a table", ["lamp | above | table"]),
    ("a dog under a chair", ["dog | below | chair"]),
    ("a balloon beneath a book.", ["balloon | below | book"]),
    ("A Red Circle To The Left Of A Blue Square", ["Red Circle | left of | Blue Square"]),
    ("a mouse to the right side of a keyboard", ["mouse | right of | keyboard"]),
    # chains: A r1 B r2 C -> (A r1 B), (B r2 C)
    ("a frog above a sneaker below a teapot", ["frog | above | sneaker", "sneaker | below | teapot"]),
    ("a red circle to the left of a blue square above a green triangle",
     ["red circle | left of | blue square", "blue square | above | green triangle"]),
    # the object nearest the relation is the one related
    ("a dog and a cat to the left of a ball, on a sunny day", ["cat | left of | ball"]),
])
def test_relations_and_objects(prompt, expected):
    assert parse_prompt(prompt).describe() == expected


@pytest.mark.parametrize("prompt", ["a red circle and a blue square", "a photo of a dog", "", "overcast sky",
                                    "a cat next to a dog", "thunderous applause"])
def test_no_relation_gives_no_triplet(prompt):
    assert parse_prompt(prompt).triplets == []


@pytest.mark.parametrize("prompt", ["to the left of a cat", "a dog to the left of", "a dog above below a cat",
                                    "a photo of above a cat"])
def test_relation_without_objects_is_a_clear_error(prompt):
    with pytest.raises(PromptParseError, match="no object"):
        parse_prompt(prompt)


def test_non_string_prompt_is_rejected():
    with pytest.raises(TypeError):
        parse_prompt(None)


def _decoded(tok, prompt, tokens):
    ids = tok(prompt).input_ids
    return "".join(tok.convert_ids_to_tokens([ids[i] for i in tokens])).replace("</w>", " ").strip()


@pytest.mark.parametrize("prompt", ["a photo of a dog right of a teddy bear", "a ball above a fire hydrant",
                                    "a cat, below a dog", "an umbrella to the left of a cat above a dog"])
def test_token_indices_in_clip_bpe(clip_tok, prompt):
    parsed = parse_prompt(prompt, clip_tok)
    for obj in parsed.objects:
        # the tokens decode back to the object's words (spaces dropped by BPE's end-of-word marks)
        assert _decoded(clip_tok, prompt, obj.tokens).replace(" ", "") == obj.name.replace(" ", "")
        assert min(obj.tokens) >= 1                       # after <|startoftext|>


def test_token_indices_in_the_shapes_tokenizer():
    tok = build_tokenizer()
    p = "a photo of a red circle to the left of a blue square"
    parsed = parse_prompt(p, tok)
    ids = tok(p).input_ids
    words = [tok.convert_ids_to_tokens(ids[i]) for o in parsed.objects for i in o.tokens]
    assert words == ["red", "circle", "blue", "square"]


def test_object_beyond_the_token_limit_is_an_error(clip_tok):
    long = "a " + "very " * 12 + "dog to the left of a cat"     # > 40 tokens of the tiny tokenizer
    with pytest.raises(PromptParseError, match="limit"):
        parse_prompt(long, clip_tok)


def test_explicit_triplets():
    p = make_triplets([[2], [6, 7], [9]], [(0, "left of", 1), (1, "above", 2)], names=["a", "b", "c"])
    assert p.describe() == ["a | left of | b", "b | above | c"]
    assert p.token_lists() == [[2], [6, 7], [9]]
    with pytest.raises(ValueError, match="relation"):
        make_triplets([[1], [2]], [(0, "near", 1)])
    with pytest.raises(ValueError, match="two different objects"):
        make_triplets([[1], [2]], [(0, "above", 0)])
    with pytest.raises(ValueError, match="token index"):
        make_triplets([[], [2]], [(0, "above", 1)])

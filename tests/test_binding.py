"""l2s/binding.py: the binding term against a float64 reference and finite differences, its token
groups in word-level, CLIP BPE and T5 unigram tokenizers, and its place in the steering gradient."""
import numpy as np
import pytest
import torch

from l2s.binding import binding_groups, binding_term
from l2s.prompts import make_triplets, object_list, parse_prompt
from l2s.steer import Steerer, SteeringConfig
from l2s.testing import write_clip_tokenizer, write_t5_tokenizer
from helpers import assert_term_linear_in_weight


def _reference(mods, nouns):
    """float64 NumPy: mean_i [(1 - cos(M_i, H_i)) + mean_{j != i} cos(M_i, H_j)]."""
    def cos(a, b):
        a, b = a.ravel(), b.ravel()
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    M, N = mods.shape[1], nouns.shape[1]
    out = []
    for b in range(mods.shape[0]):
        terms = [(1 - cos(mods[b, i], nouns[b, i])) + np.mean([cos(mods[b, i], nouns[b, j]) for j in range(N) if j != i])
                 for i in range(M)]
        out.append(np.mean(terms))
    return np.array(out)


@pytest.mark.parametrize("M,N", [(1, 2), (2, 3), (3, 3)])
def test_term_matches_a_float64_reference(rng, M, N):
    mods, nouns = rng.random((4, M, 6, 6)), rng.random((4, N, 6, 6))
    got = binding_term(torch.tensor(mods), torch.tensor(nouns))
    np.testing.assert_allclose(got.numpy(), _reference(mods, nouns), rtol=1e-12)


def test_gradient_matches_finite_differences(rng):
    mods = torch.tensor(rng.random((2, 2, 5, 5)), requires_grad=True)
    nouns = torch.tensor(rng.random((2, 3, 5, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, n: binding_term(m, n), (mods, nouns), eps=1e-6, atol=1e-7)


def test_a_modifier_on_its_own_noun_scores_lower_than_on_another(rng):
    blob = np.zeros((2, 8, 8))
    blob[0, 1:3, 1:3] = 1                  # noun 0 on the left
    blob[1, 5:7, 5:7] = 1                  # noun 1 on the right
    nouns = torch.tensor(blob[None] + 1e-3)
    bound = binding_term(nouns[:, :1].clone(), nouns)          # "red" where its own circle is
    crossed = binding_term(nouns[:, 1:2].clone(), nouns)       # "red" on the other object's square
    assert float(bound) < 0.01 and float(crossed) > 1.9


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="binding_term"):
        binding_term(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="binding_term"):
        binding_term(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4))


def _words(tokenizer, text, groups):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)
    return ["".join(tokens[i] for i in g).replace("▁", "").replace("</w>", "") for g in groups]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from l2s_shapes.model import build_tokenizer
    return {"word-level": build_tokenizer(), "clip-bpe": write_clip_tokenizer(tmp_path_factory.mktemp("clip")),
            "t5-unigram": write_t5_tokenizer(tmp_path_factory.mktemp("t5"))}


@pytest.mark.parametrize("kind", ["word-level", "clip-bpe", "t5-unigram"])
def test_groups_split_each_name_into_modifiers_and_noun(tokenizers, kind):
    tok = tokenizers[kind]
    parsed = object_list(parse_prompt("a red circle left of a square above a green triangle"), tok)
    mods, nouns = binding_groups(parsed, tok)
    assert _words(tok, parsed.prompt, mods) == ["red", "green"]
    assert _words(tok, parsed.prompt, nouns) == ["circle", "triangle", "square"]   # objects with modifiers first


def test_no_groups_without_modifiers_or_token_spans(tokenizers):
    tok = tokenizers["word-level"]
    assert binding_groups(parse_prompt("a circle left of a square", tok), tok) == ([], [])
    assert binding_groups(make_triplets([[2, 3], [6, 7]], [(0, "left of", 1)]), tok) == ([], [])


def test_config_refuses_a_bad_weight():
    for bad in (-1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="binding_weight"):
            SteeringConfig(binding_weight=bad)


def test_the_term_enters_the_steering_gradient_with_its_weight(sd, classifier, rng):
    """loss_pass's gradient is d(relation loss)/dz + w * d(binding term)/dz: linear in w, and the
    term is not zero on a prompt whose objects have modifiers; the relation losses stay the
    classifier's alone."""
    def check(steer, w):
        if w:
            assert len(steer.binding_mods) == 2 and len(steer.binding_nouns) == 2
    assert_term_linear_in_weight(sd, classifier, "a red dog to the left of a blue cat", rng, "binding_weight", check)


def test_stack_classifiers_are_refused(sd, tmp_path):
    from test_authors import _checkpoint
    from l2s import load_classifier
    from l2s.authors import convert_checkpoint
    path, _, _ = _checkpoint(tmp_path, "sd14")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    with pytest.raises(ValueError, match="binding_weight"):
        Steerer(sd, clf, "a red dog to the left of a blue cat", binding_weight=1.0)


def test_a_prompt_without_modifiers_warns_that_there_is_no_term(sd, classifier):
    with pytest.warns(UserWarning, match="no binding term"):
        steer = Steerer(sd, classifier, "a dog to the left of a cat", binding_weight=1.0)
    assert steer.binding_mods == [] and steer.binding_nouns == []

"""shapes/l2s_shapes/text_pretrain.py: the contrastive text-encoder pre-training."""
import json

import numpy as np
import torch

from l2s_shapes.model import build_text_encoder, build_tokenizer
from l2s_shapes.text_pretrain import ImageEncoder, pretrain_text_encoder, relation_choice_accuracy


def test_an_encoder_blind_to_the_word_scores_a_coin_toss():
    """A text encoder that cannot see the relation word (its embedding zeroed) ties every choice: 0.5."""
    tok = build_tokenizer()
    enc = build_text_encoder(tok, 0)
    with torch.no_grad():
        for w in ("left", "right", "above", "below"):
            enc.get_input_embeddings().weight[tok.convert_tokens_to_ids(w)] = 0
        enc.get_input_embeddings().weight[tok.convert_tokens_to_ids("of")] = 0
    proj = torch.nn.Linear(64, 64)
    images = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    caps = ["a red circle left of a blue square", "a red circle above a blue square",
            "a cyan cross below a red circle", "a photo of a red circle"]
    assert relation_choice_accuracy(enc, proj, ImageEncoder(), tok, images, caps) == 0.5


def test_a_tiny_run_saves_an_encoder_the_model_can_load(tmp_path):
    from transformers import CLIPTextModel
    folder = pretrain_text_encoder(tmp_path, steps=3, batch=8, n_scenes=40, validation=16)
    enc = CLIPTextModel.from_pretrained(folder)
    assert enc.config.hidden_size == 64
    log = [json.loads(l) for l in (tmp_path / "text_pretrain_log.jsonl").read_text().splitlines()]
    assert 0.0 <= log[-1]["relation_choice_val"] <= 1.0

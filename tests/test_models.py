"""l2s/models: one adapter per family, one detection function, a registry open to new families."""
import pytest
import torch

from l2s.capture import select_layers
from l2s.inversion import MapInverter
from l2s.models import ADAPTERS, FluxAdapter, ModelAdapter, SD3Adapter, UNetAdapter, adapter_for, register
from l2s.testing import tiny_flux, tiny_sd3_pipeline, tiny_sd_pipeline


def test_each_family_is_detected_by_one_function(tmp_path):
    sd = tiny_sd_pipeline(tmp_path / "sd")
    assert isinstance(adapter_for(sd.unet), UNetAdapter)
    assert adapter_for(sd.unet).object_tokenizer(sd) is sd.tokenizer
    flux = tiny_flux()
    assert isinstance(adapter_for(flux), FluxAdapter)
    sd3 = tiny_sd3_pipeline(tmp_path / "sd3")
    assert isinstance(adapter_for(sd3.transformer), SD3Adapter)
    assert adapter_for(sd3.transformer).object_tokenizer(sd3) is sd3.tokenizer
    with pytest.raises(TypeError, match="no l2s model adapter recognises it"):
        adapter_for(torch.nn.Linear(2, 2))


def test_flux_objects_are_named_by_t5():
    class Pipe:
        tokenizer, tokenizer_2 = "clip", "t5"
    assert FluxAdapter().object_tokenizer(Pipe()) == "t5"


def test_inverter_takes_the_tokenizer_the_steerer_takes(tmp_path):
    sd = tiny_sd_pipeline(tmp_path / "sd")
    with MapInverter(sd, map_size=8, num_inference_steps=4) as inv:
        assert inv.tokenizer is adapter_for(sd.unet).object_tokenizer(sd)


def test_a_new_family_is_one_adapter_and_one_registry_line():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    class ToyAdapter(ModelAdapter):
        family = "toy"

        def detects(self, denoiser):
            return isinstance(denoiser, Toy)

        def find_layers(self, denoiser):
            from l2s.models import CrossAttentionLayer
            return [CrossAttentionLayer("blocks.0", denoiser.blocks[0], "joint", 4)]

        def default_blocks(self, layers):
            return ("joint",)

    register(ToyAdapter())
    try:
        toy = Toy()
        assert adapter_for(toy).family == "toy"
        assert [l.name for l in select_layers(toy)] == ["blocks.0"]
    finally:
        ADAPTERS.pop(0)
    with pytest.raises(TypeError):
        adapter_for(Toy())

"""l2s/testing.py: the random-weight stand-ins have the published architectures (parameter counts of
the real checkpoints: SD 1.4 UNet 859,520,964; SD 2.1 UNet 865,910,724; FLUX.1-dev transformer
11,901,408,320), built on the meta device so nothing is allocated."""
import pytest
import torch

from l2s.testing import FLUX_DEV_CONFIG, SD_UNET_CONFIGS

PUBLISHED = {"sd14": 859_520_964, "sd21": 865_910_724}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_sd_unet_configs_are_the_published_architectures(name):
    from diffusers import UNet2DConditionModel
    with torch.device("meta"):
        assert _count(UNet2DConditionModel(**SD_UNET_CONFIGS[name])) == PUBLISHED[name]


def test_flux_dev_config_is_the_published_architecture():
    from diffusers import FluxTransformer2DModel
    with torch.device("meta"):
        assert _count(FluxTransformer2DModel(**FLUX_DEV_CONFIG)) == 11_901_408_320

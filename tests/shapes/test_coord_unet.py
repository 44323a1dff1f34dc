"""shapes/l2s_shapes/coord_unet.py: the UNet that also reads pixel coordinates."""
import json

import torch

from conftest import TINY_UNET
from l2s_shapes.coord_unet import CoordUNet2DConditionModel, load_into
from l2s_shapes.model import build_unet
from l2s_shapes.pipeline import build_pipeline, load_shipped


def _out(unet, x, t, cond):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=cond).sample


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 64, 64, generator=g), torch.tensor([999, 300]),
            torch.randn(2, 24, 64, generator=g))


def test_a_plain_unet_starts_a_coord_unet_exactly_where_it_was():
    plain = build_unet(seed=3, **TINY_UNET)
    coord = build_unet(seed=0, coords=True, **TINY_UNET)
    assert isinstance(coord, CoordUNet2DConditionModel)
    assert coord.conv_in.weight.shape[1] == 5 and coord.config.in_channels == 3    # callers still pass 3 channels
    load_into(coord, plain.state_dict())
    x, t, cond = _inputs()
    assert torch.equal(_out(plain, x, t, cond), _out(coord, x, t, cond))


def test_coordinate_weights_make_the_output_depend_on_position():
    """Nonzero coordinate weights change the output for the same image: position is an input."""
    coord = build_unet(seed=0, coords=True, **TINY_UNET)
    x, t, cond = _inputs()
    with torch.no_grad():
        coord.conv_in.weight[:, 3:] = 0
    base = _out(coord, x, t, cond)
    with torch.no_grad():
        coord.conv_in.weight[:, 3:] = torch.randn_like(coord.conv_in.weight[:, 3:])
    moved = _out(coord, x, t, cond)
    assert (moved - base).abs().max() > 1e-3


def test_coordinate_channels_run_left_to_right_and_top_to_bottom():
    from l2s_shapes.coord_unet import CoordConv2d
    conv = CoordConv2d(5, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 3] = 1                      # output 0 = the x channel, output 1 = the y channel
        conv.weight[1, 4] = 1
    out = conv(torch.zeros(2, 3, 4, 6))
    assert torch.allclose(out[1, 0], torch.linspace(-1, 1, 6).expand(4, 6))
    assert torch.allclose(out[1, 1], torch.linspace(-1, 1, 4).view(4, 1).expand(4, 6))


def test_a_saved_coord_pipeline_loads_back_as_one(tmp_path):
    pipe = build_pipeline(seed=1, coords=True, **TINY_UNET)
    with torch.no_grad():
        pipe.unet.conv_in.weight[:, 3:] = 0.1
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["unet"] == ["l2s_shapes.coord_unet",
                                                                               "CoordUNet2DConditionModel"]
    back = load_shipped(tmp_path)
    assert isinstance(back.unet, CoordUNet2DConditionModel)
    x, t, cond = _inputs(1)
    assert torch.equal(_out(pipe.unet, x, t, cond), _out(back.unet, x, t, cond))

import pytest

pytest.importorskip("l2s_shapes", reason="the shapes world is not installed (pip install ./shapes)")

TINY_UNET = dict(block_out_channels=(8, 8, 16, 16), attention_head_dim=4, norm_num_groups=4)


@pytest.fixture(scope="session")
def tiny_pipe():
    from l2s_shapes.pipeline import build_pipeline
    return build_pipeline(seed=0, **TINY_UNET)

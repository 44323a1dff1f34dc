"""l2s — Learn-to-Steer: steer text-to-image diffusion toward spatial relations with a learned loss.

The maths lives in the ``l2s._C`` C/CUDA extension; this package wraps it:
``l2s.core`` (typed op wrappers), ``l2s.classifier`` (the relation classifier), ``l2s.demo``.
"""
from .core import (adamw_update, attn_maps_forward, attn_maps_backward, cuda_available, empty,
                   normalize_maps_forward, normalize_maps_backward, resize_maps_forward, resize_maps_backward, token_table,
                   latent_update)
from .classifier import RELATIONS, ClassifierConfig, RelationClassifier
from .hub import load_classifier

__version__ = "0.1.0"
__all__ = [
    "attn_maps_forward", "attn_maps_backward", "resize_maps_forward", "resize_maps_backward", "normalize_maps_forward",
    "normalize_maps_backward", "latent_update", "adamw_update", "token_table", "cuda_available", "empty",
    "RELATIONS", "ClassifierConfig", "RelationClassifier", "load_classifier", "__version__",
]

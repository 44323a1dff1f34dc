"""l2s — Learn-to-Steer: steer text-to-image diffusion toward spatial relations with a learned loss.

The maths lives in the ``_l2s`` C/CUDA extension; this package wraps it:
``l2s.core`` (typed op wrappers), ``l2s.classifier`` (the relation classifier), ``l2s.demo``.
"""
from .core import (adamw_step, attention_maps, attention_maps_backward, cuda_available, empty,
                   normalize_maps, normalize_maps_backward, resize_maps, resize_maps_backward, token_table,
                   update_latent)
from .classifier import RELATIONS, ClassifierConfig, RelationClassifier
from .hub import load_classifier

__version__ = "0.1.0"
__all__ = [
    "attention_maps", "attention_maps_backward", "resize_maps", "resize_maps_backward", "normalize_maps",
    "normalize_maps_backward", "update_latent", "adamw_step", "token_table", "cuda_available", "empty",
    "RELATIONS", "ClassifierConfig", "RelationClassifier", "load_classifier", "__version__",
]

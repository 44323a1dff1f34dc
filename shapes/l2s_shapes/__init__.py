"""The shapes world: synthetic scenes with exact boxes, and an exact evaluator of spatial relations.

Real SD/Flux weights cannot be had here, so spatial accuracy is measured on a world the project
controls: coloured shapes on light backgrounds, where detection is exact and GenEval's position rule
can be applied to true boxes.
"""
from .scenes import COLOURS, SHAPES, Scene, SceneObject, caption, generate_scene, render_shape_mask
from .detect import Detection, PromptResult, detect, judge_prompt, parse_object_phrase

__all__ = ["COLOURS", "SHAPES", "Scene", "SceneObject", "caption", "generate_scene", "render_shape_mask",
           "Detection", "PromptResult", "detect", "judge_prompt", "parse_object_phrase"]

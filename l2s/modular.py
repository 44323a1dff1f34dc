"""Learn-to-Steer inside a Modular Diffusers pipeline (SDXL, Flux): a loop block that steers.

    from l2s.modular import add_steering, steering
    blocks = StableDiffusionXLAutoBlocks()            # or FluxAutoBlocks()
    add_steering(blocks)                              # a block at the head of every denoise loop
    pipe = blocks.init_pipeline(...)                  # (or add_steering(pipe) on a built pipeline)
    with Steerer(pipe, classifier, prompt) as steer, steering(pipe, steer):
        image = pipe(prompt=prompt, output="images")[0]

Blocks are copied when a pipeline is made, so the block holds no steerer: ``steering(pipe, steer)``
tells it which one serves this pipeline (outside that, the block does nothing).

The block runs before the loop's own blocks at each step, so it steers step 0 as well. Modular
pipelines batch the guidance passes separately, so the block does not replay a recorded call: it
builds the denoiser's conditional call from the loop's state (``ModelAdapter.modular_call``), then
runs the usual steering iterations with gradients re-enabled (the loop runs under ``no_grad``) and
the attention backend switched to PyTorch's native one, which has a backward (and restored after).
SD 1.x/2.x have no modular pipeline: use the callback route (``Steerer.callback()``) there.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Any, Iterator

import torch
from diffusers.modular_pipelines import LoopSequentialPipelineBlocks, ModularPipelineBlocks
from diffusers.modular_pipelines.modular_pipeline_utils import InputParam, OutputParam

BLOCK_NAME = "l2s_steer"


_ACTIVE: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()   # pipeline -> its Steerer


class SteeringLoopBlock(ModularPipelineBlocks):
    """One step of Learn-to-Steer inside a denoise loop: updates ``latents`` at the steerer's steps
    (the steerer ``steering(pipe, steer)`` attached to this pipeline; none: the block does nothing)."""

    @property
    def description(self) -> str:
        return "Learn-to-Steer (l2s): moves the latents toward the prompt's spatial relations before the step."

    @property
    def inputs(self) -> list[InputParam]:
        return [InputParam("latents", required=True, type_hint=torch.Tensor),
                InputParam("num_inference_steps", required=True, type_hint=int)]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [OutputParam("latents", type_hint=torch.Tensor, description="The steered latents")]

    def __call__(self, components: Any, block_state: Any, i: int, t: torch.Tensor) -> tuple[Any, Any]:
        steer = _ACTIVE.get(components)
        n = len(components.scheduler.timesteps)
        if steer is None or not steer.active or i not in steer.hooked_steps(n):
            return components, block_state
        steer.replay.last = ((), steer.adapter.modular_call(block_state, t))
        with native_attention():
            block_state.latents = steer.process(components, block_state.latents, i, n, recorded_t=t)
        return components, block_state


@contextlib.contextmanager
def native_attention() -> Iterator[None]:
    """PyTorch's native attention for the steering pass (Sage, NPU and the context-parallel backends
    have no backward); the user's backend is restored after."""
    try:
        from diffusers.models.attention_dispatch import attention_backend
    except ImportError:                                   # older diffusers: processors pick SDPA themselves
        yield
        return
    with attention_backend("native"):
        yield


def _loops(blocks: Any) -> Iterator[LoopSequentialPipelineBlocks]:
    if isinstance(blocks, LoopSequentialPipelineBlocks):
        yield blocks
    for sub in getattr(blocks, "sub_blocks", {}).values():
        yield from _loops(sub)


def _own_blocks(blocks_or_pipe: Any) -> Any:
    # a ModularPipeline's ``blocks`` property returns a copy; its own blocks are ``_blocks``
    return getattr(blocks_or_pipe, "_blocks", blocks_or_pipe)


def add_steering(blocks_or_pipe: Any) -> int:
    """Insert a ``SteeringLoopBlock`` at the head of every denoise loop of a blocks object (before
    ``init_pipeline``) or of a built ModularPipeline; returns how many loops got one."""
    loops = list(_loops(_own_blocks(blocks_or_pipe)))
    if not loops:
        raise TypeError(f"{type(blocks_or_pipe).__name__} has no denoise loop (LoopSequentialPipelineBlocks) to "
                        "steer in")
    for loop in loops:
        if BLOCK_NAME not in loop.sub_blocks:
            loop.sub_blocks.insert(BLOCK_NAME, SteeringLoopBlock(), 0)
    return len(loops)


def remove_steering(blocks_or_pipe: Any) -> None:
    """Take the steering blocks out again (the pipeline runs as before)."""
    for loop in _loops(_own_blocks(blocks_or_pipe)):
        loop.sub_blocks.pop(BLOCK_NAME, None)


@contextlib.contextmanager
def steering(pipe: Any, steerer: Any) -> Iterator[Any]:
    """Within the block, ``pipe``'s steering blocks use ``steerer`` (made on this pipeline).
    ``SteeringConfig.restart`` is not applied here (the loop batches its guidance passes itself;
    warned)."""
    if getattr(getattr(steerer, "config", None), "restart", None) is not None:
        warnings.warn("l2s: SteeringConfig.restart is not applied inside a Modular Diffusers loop; use "
                      "Steerer.generate or the callback route for it", stacklevel=3)
    _ACTIVE[pipe] = steerer
    try:
        yield steerer
    finally:
        _ACTIVE.pop(pipe, None)

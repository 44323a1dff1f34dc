"""Data-parallel processes through an existing engine: Accelerate's ``PartialState`` (which also
reads what ``torchrun`` sets). ``l2s train-classifier`` and ``l2s eval`` split their work by rank
with these; a single process (no WORLD_SIZE > 1) needs neither Accelerate nor torch.distributed."""
from __future__ import annotations

import os
from typing import Any, Callable


def distributed_rank(device: str = "cpu") -> tuple[int, int, Callable[[], None], str]:
    """(rank, world size, barrier, this rank's device) from Accelerate's process state when launched
    under ``accelerate launch``/``torchrun`` (WORLD_SIZE > 1; gloo on the CPU, the rank's own GPU
    with ``device="cuda"``), else (0, 1, no-op, device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None, device
    try:
        from accelerate import PartialState
    except ImportError:
        raise RuntimeError("launched with WORLD_SIZE > 1 but accelerate is not installed (pip install accelerate)") from None
    state = PartialState(cpu=device == "cpu")
    return state.process_index, state.num_processes, state.wait_for_everyone, str(state.device)


def distributed_gather(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank (Accelerate's ``gather_object``)."""
    from accelerate.utils import gather_object
    return gather_object([obj])

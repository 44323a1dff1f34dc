"""Argument checks for the command line: every value is validated while arguments are parsed,
before any model is loaded or any image generated, and a bad one ends the command with one clear
line (``l2s generate: error: argument --steps: must be an integer >= 1, got '-3'``), never a
traceback and never after the work has run.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            span = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}")
        return v
    return parse


def float_in(lo: float | None = None, hi: float | None = None, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number >= lo (> lo when ``above``) and <= hi."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if lo is not None and (v <= lo if above else v < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {lo}, got {text!r}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text!r}")
        return v
    return parse


def _writable_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{what}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{what}: folder {str(folder)!r} is not writable")


def file_out(text: str) -> str:
    """An argparse type: a file that can be written (its folder exists and is writable)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not writable")
    _writable_folder(path.parent if str(path.parent) else Path("."), text)
    return text


def image_out(text: str) -> str:
    """An argparse type: an image path PIL can write (by its extension), as ``file_out``."""
    from PIL import Image
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder")
    Image.init()
    if Path(text).suffix.lower() not in Image.registered_extensions():
        raise argparse.ArgumentTypeError(f"{text!r} has no image extension PIL can write (use .png)")
    return file_out(text)


def prefix_out(text: str) -> str:
    """An argparse type: a path prefix (PREFIX-maps.png ...) whose folder exists and is writable."""
    _writable_folder(Path(text).parent if str(Path(text).parent) else Path("."), text)
    return text


def folder_out(text: str) -> str:
    """An argparse type: a folder to write into (made if missing; its nearest existing parent must be writable)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: {str(probe)!r} is not writable")
    return text


def data_spec(text: str) -> str:
    """An argparse type: a ``train-classifier --data`` value whose paths exist (``data_spec``)."""
    from .data_spec import parse_data_spec
    try:
        parse_data_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def int_list(text: str) -> list[int]:
    """An argparse type: distinct non-negative integers, "1-12", "0,5,9" or both ("0-3,9")."""
    from .stats import parse_int_list
    try:
        values = parse_int_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: values must be >= 0")
    return values


def folder_in(text: str) -> str:
    """An argparse type: an existing folder (a pipeline folder)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return text


def file_in(text: str) -> str:
    """An argparse type: an existing readable file."""
    if not Path(text).is_file() or not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist or cannot be read")
    return text


def classifier_in(text: str) -> str:
    """An argparse type: a saved classifier: a folder with config.json + model.safetensors, the stem
    of STEM.json + STEM.safetensors, or (not checked here) a Hub repo id "owner/name"."""
    path = Path(text)
    if path.is_dir():
        missing = [n for n in ("config.json", "model.safetensors") if not (path / n).is_file()]
        if missing:
            raise argparse.ArgumentTypeError(f"{text!r} is not a classifier folder (missing {', '.join(missing)})")
        return text
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if all(stem.with_suffix(s).is_file() for s in (".json", ".safetensors")):
        return str(stem)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not path.parent.exists():
        return text                                          # a Hub repo id: load_classifier says if it fails
    raise argparse.ArgumentTypeError(f"no classifier at {text!r} (a folder with config.json and model.safetensors, "
                                     "or STEM.json + STEM.safetensors)")


def prompt_text(text: str) -> str:
    """An argparse type: a prompt with at least one word."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty")
    return text


def one_line_warnings() -> None:
    """Show warnings as one ``l2s: warning: ...`` line each (no file:line source echo)."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        print(f"l2s: warning: {text[5:] if text.startswith('l2s: ') else text}", file=file or sys.stderr)
    warnings.showwarning = show


def unknown_words(tokenizer, prompt: str) -> list[str]:
    """Words of ``prompt`` the tokenizer maps to its unknown token (the model never saw them)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    return [w for w in prompt.replace(",", " ").replace(";", " ").split()
            if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]

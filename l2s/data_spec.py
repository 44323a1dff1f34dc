"""The ``--data`` value of ``l2s train-classifier``: which examples a classifier is trained on.
Torch-free: the command line checks it while parsing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: kind ("boxes", "gqa", "shapes") and its paths (shapes: its line fraction, if given)."""
    kind: str
    paths: tuple[str, ...] = ()

    @property
    def line_fraction(self) -> float:
        """shapes: the share of examples drawn as three objects in a line (0 unless given)."""
        return float(self.paths[0]) if self.kind == "shapes" and self.paths else 0.0

    def text(self) -> str:
        """The spec as written on the command line."""
        return self.kind + (":" + ",".join(self.paths) if self.paths else "")


def parse_data_spec(text: str) -> DataSpec:
    """``boxes:FOLDER`` (``FOLDER/boxes.json``), ``gqa:SCENE_GRAPHS.json,IMAGE_DIR``, ``shapes`` or
    ``shapes:LINE_FRACTION`` (that share of the shapes examples from three objects in a line); the
    paths must exist."""
    kind, _, rest = text.partition(":")
    if kind == "shapes" and not rest:
        return DataSpec("shapes")
    if kind == "shapes":
        try:
            share = float(rest)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"shapes:LINE_FRACTION takes a share in [0, 1], got {rest!r}")
        return DataSpec("shapes", (rest,))
    if kind == "boxes" and rest:
        if not (Path(rest) / "boxes.json").is_file():
            raise ValueError(f"boxes:{rest}: {Path(rest) / 'boxes.json'} does not exist")
        return DataSpec("boxes", (rest,))
    if kind == "gqa" and rest.count(",") == 1:
        graphs, images = rest.split(",")
        if not Path(graphs).is_file():
            raise ValueError(f"gqa: scene graphs {graphs!r} do not exist")
        if not Path(images).is_dir():
            raise ValueError(f"gqa: image folder {images!r} does not exist")
        return DataSpec("gqa", (graphs, images))
    raise ValueError(f"must be boxes:FOLDER, gqa:SCENE_GRAPHS.json,IMAGE_DIR, shapes or shapes:LINE_FRACTION, "
                     f"got {text!r}")

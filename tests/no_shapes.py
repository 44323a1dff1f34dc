"""Importing this module makes ``import l2s_shapes`` fail in this process as if the optional shapes
world were not installed (tests/test_packaging.py, scripts/test_without_shapes.py)."""
import importlib.abc
import sys


class NoShapes(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "l2s_shapes" or name.startswith("l2s_shapes."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoShapes())

"""Run the test suite as if the optional shapes world (l2s-shapes) were not installed: importing
l2s_shapes fails in this process, so its tests skip and the rest must pass without it.
    .venv/bin/python scripts/test_without_shapes.py [pytest arguments]   (default: -q tests)
"""
import importlib.abc, sys
class NoShapes(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "l2s_shapes" or name.startswith("l2s_shapes."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoShapes())
import pytest
sys.exit(pytest.main(sys.argv[1:] or ["-q", "tests", "-p", "no:cacheprovider"]))

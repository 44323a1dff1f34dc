"""Run the test suite as if the optional shapes world (l2s-shapes) were not installed: importing
l2s_shapes fails in this process, so its tests skip and the rest must pass without it.
    .venv/bin/python scripts/test_without_shapes.py [pytest arguments]   (default: -q tests)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import no_shapes  # noqa: E402,F401  (blocks l2s_shapes from here on)
import pytest  # noqa: E402

sys.exit(pytest.main(sys.argv[1:] or ["-q", "tests", "-p", "no:cacheprovider"]))

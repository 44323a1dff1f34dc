"""The library stands without the optional shapes world (the ``l2s-shapes`` distribution in shapes/):
every ``l2s`` module imports, the core and a steering loss run, and the commands that need the world
say so in one line. Run in a child process where importing ``l2s_shapes`` fails as if uninstalled."""
import subprocess
import sys
from pathlib import Path

BLOCK = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import no_shapes\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=600)


def test_every_library_module_imports_without_the_shapes_world():
    r = _run('''
import importlib, pkgutil, l2s
names = [m.name for m in pkgutil.walk_packages(l2s.__path__, "l2s.") if m.name != "l2s.__main__"]
for name in names:
    importlib.import_module(name)
assert "l2s_shapes" not in sys.modules
import numpy as np, torch
from l2s.classifier import RelationClassifier
clf = RelationClassifier(seed=0)
maps = torch.rand(2, 2, 16, 16, requires_grad=True)
probs, _ = clf.forward(maps.detach(), np.array([0, 1]))
print(len(names), tuple(probs.shape))
''')
    assert r.returncode == 0, r.stderr
    count, shape = r.stdout.split(" ", 1)
    assert int(count) > 25 and shape.strip() == "(2, 4)"


def test_shapes_commands_say_the_world_is_missing_in_one_line():
    r = _run('''
from l2s.__main__ import main
rc = main(["generate", "a red circle to the left of a blue square", "--out", "/tmp/never-written.png"])
sys.exit(rc)
''')
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "shapes world, which is not installed" in lines[0] and "pip install" in lines[0]
    r = _run('from l2s.__main__ import main; sys.exit(main(["info"]))')
    assert r.returncode == 0, r.stderr

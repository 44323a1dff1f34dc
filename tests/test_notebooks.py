"""notebooks/*.ipynb run top to bottom in a fresh kernel (nbclient, the engine under nbmake); a
failing cell (the notebooks assert what they show) fails the test. ``pytest --nbmake notebooks``
runs the same notebooks through the nbmake plugin."""
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path):
    pytest.importorskip("l2s_shapes", reason="the notebook walks through the shapes world (pip install ./shapes)")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute(cwd=str(path.parent))
    produced = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in produced if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in produced), "no figure was drawn"

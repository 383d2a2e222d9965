"""notebooks/compare_ratios.ipynb runs top to bottom (nbclient) with the shipped
models on a tiny image set built from scikit-image's bundled photos."""

from pathlib import Path

import nbformat
import numpy as np
import skimage.data
from nbclient import NotebookClient
from PIL import Image

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "compare_ratios.ipynb"


def test_compare_notebook_executes(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for category, name, img in [("astronomy", "hubble", skimage.data.hubble_deep_field()[:192, :256]),
                                ("other", "chelsea", skimage.data.chelsea()[:192, :256])]:  # fmt: skip
        (data / category / "test").mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(img)).save(data / category / "test" / f"{name}.png")
    monkeypatch.delenv("CATCOMP_MODELS")  # the shipped models
    monkeypatch.setenv("CATCOMP_DATA", str(data))
    monkeypatch.setenv("CATCOMP_NB_LIMIT", "1")
    monkeypatch.setenv("CATCOMP_NB_OUT", str(tmp_path / "out"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "['astronomy', 'other']" in text and "saving_vs_jpeg_pct" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert (tmp_path / "out" / "compare.json").is_file()

"""Every notebook runs headless, as CI and JupyterLab run it: jupytext .py -> notebook -> nbclient, in fast mode."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.py"))
EXPECTED_FIGURES = {
    "01_bernstein_bound": {"01_bandwidth", "01_score_curves", "01_bernstein_ratios", "01_distance_coverage",
                           "01_identifiability"},
    "02_reproduce_extension": set(),  # in fast mode its figures go to the run's temporary directory
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="notebook tests need the dev extra (jupytext, nbclient)")
    from nbclient import NotebookClient

    monkeypatch.setenv("ENDPROMPT_FAST", "1")
    monkeypatch.setenv("ENDPROMPT_FIGURES", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(path)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = "".join(o.get("text", "") for cell in code for o in cell.get("outputs", []))
    assert "checks passed" in outputs
    written = {p.stem for p in tmp_path.glob("*.png")}
    assert EXPECTED_FIGURES.get(path.stem, set()) <= written, written

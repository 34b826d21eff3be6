"""Every notebook runs headless, as CI and JupyterLab run it: jupytext .py -> notebook -> nbclient, in fast mode."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))
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
    monkeypatch.delenv("ENDPROMPT_FIGURES", raising=False)  # fast mode must keep away from figures/ by itself
    monkeypatch.setenv("MPLBACKEND", "Agg")
    committed = {p: p.stat().st_mtime_ns for p in (ROOT / "figures").glob("*.png")}
    nb = jupytext.read(path)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = "".join(o.get("text", "") for cell in code for o in cell.get("outputs", []))
    assert "checks passed" in outputs
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "figures").glob("*.png")} == committed  # full-mode figures
    expected = EXPECTED_FIGURES.get(path.stem, set())
    if expected:
        written = {p.stem for p in Path(re.search(r"figures -> (\S+)", outputs).group(1)).glob("*.png")}
        assert expected <= written, written

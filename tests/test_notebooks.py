"""The data scientists' notebooks run top to bottom (tiny backbone, a few dozen rows
per source) and are committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_explore_data",
        "02_train_and_evaluate",
        "03_error_analysis",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert all(
        not c.get("outputs") and not c.get("execution_count")
        for c in nb.cells
        if c.cell_type == "code"
    )


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch, tiny_backbone_dir):
    from nbclient import NotebookClient

    from training.sources import SourceError, data_dir

    try:
        data = data_dir()
    except SourceError as exc:
        pytest.skip(f"public data not available: {exc}")
    monkeypatch.setenv("CARELENS_DATA", str(data))
    monkeypatch.setenv("CARELENS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CARELENS_BACKBONE", str(tiny_backbone_dir))
    monkeypatch.setenv("CARELENS_NB_MAX_ROWS", "40")
    for path in NOTEBOOKS:  # in order: 3 reads the model 2 trained
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
        images = sum(
            "image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])
        )
        if path.stem != "03_error_analysis":
            assert images > 0, f"{path.name} drew no plot"
    assert (tmp_path / "home" / "reports" / "notebook" / "report.md").is_file()

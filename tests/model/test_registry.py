"""The model registry: numbered versions, the atomic active pointer, rollback, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from model.registry import Registry, RegistryError


def test_import_promote_rollback(tiny_model_dir, tmp_path):
    reg = Registry(tmp_path / "reg")
    assert reg.names() == [] and reg.active() is None
    v1 = reg.import_model(tiny_model_dir, note="base")
    assert v1.name == "v0001" and reg.active() == "v0001"  # the first one becomes active
    assert v1.info["status"] == "imported" and v1.info["created_at"]
    v2 = reg.import_model(tiny_model_dir)
    assert v2.name == "v0002" and reg.active() == "v0001"  # later ones do not
    assert (v2.path / "heads.safetensors").is_file()
    reg.promote("v0002", actor="test")
    assert reg.active() == "v0002" and reg.rollback_target() == "v0001"
    assert reg.pointer()["previous"] == ["v0001"]
    reg.rollback(actor="test")
    assert reg.active() == "v0001" and reg.rollback_target() is None
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.promote("v0009")
    actions = [(e["action"], e["from"], e["to"]) for e in reg.history()]
    assert actions == [
        ("promote", None, "v0001"),
        ("promote", "v0001", "v0002"),
        ("rollback", "v0002", "v0001"),
    ]
    # the pointer is one JSON document, replaced whole; no temp files are left behind
    assert json.loads(reg.active_file.read_text())["version"] == "v0001"
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".active")]


def test_incomplete_directory_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_config.json").write_text("{}")
    with pytest.raises(RegistryError, match="not a complete model directory"):
        Registry(tmp_path / "reg").import_model(tmp_path / "half")


def test_models_cli(tiny_model_dir, tmp_path):
    from carelens.cli import app

    runner = CliRunner()
    reg = str(tmp_path / "reg")
    r = runner.invoke(app, ["models", "import", str(tiny_model_dir), "--registry", reg])
    assert r.exit_code == 0, r.output
    runner.invoke(app, ["models", "import", str(tiny_model_dir), "--registry", reg])
    r = runner.invoke(app, ["models", "promote", "v0002", "--registry", reg])
    assert r.exit_code == 0 and "active: v0002" in r.output
    r = runner.invoke(app, ["models", "list", "--registry", reg])
    assert "v0001" in r.output and "v0002" in r.output
    r = runner.invoke(app, ["models", "show", "--registry", reg])
    assert json.loads(r.output)["version"] == "v0002"
    r = runner.invoke(app, ["models", "rollback", "--registry", reg])
    assert r.exit_code == 0 and "active: v0001" in r.output
    r = runner.invoke(app, ["models", "promote", "v0042", "--registry", reg])
    assert r.exit_code == 2 and "no version 'v0042'" in r.output

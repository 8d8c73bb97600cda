"""A fresh installation without a model (``build_missing``): the service answers at
once, serves the quick model as soon as it is built, then switches to the starter;
``/readyz`` says how far the build is. The build command is a stand-in that writes a
progress file and copies the tiny model, each step released by the test."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serving.factories import ADMIN_KEY

FAKE_BUILD = textwrap.dedent(
    """
    import json, shutil, sys, time
    from pathlib import Path
    args = sys.argv[1:]
    out = Path(args[args.index("--out") + 1])
    progress = Path(args[args.index("--progress-file") + 1])
    stage = "quick" if "--quick" in args else "starter"
    gates = Path(sys.argv[0]).parent
    progress.write_text(json.dumps(
        {"stage": "fine-tuning", "fraction": 0.5, "message": f"{stage} halfway"}))
    while not (gates / f"{stage}.go").exists():
        time.sleep(0.05)
    if (gates / f"{stage}.fail").exists():
        print("no public data at /nowhere to build a model from")
        sys.exit(3)
    out.mkdir(parents=True)
    (out / "partial").write_text("written before the model")
    shutil.copytree(sys.argv[0] + ".model", out, dirs_exist_ok=True)
    """
)


@pytest.fixture
def fresh(tmp_path, tiny_model_dir, clock):
    """An app over an empty model folder, building with the stand-in command."""
    import shutil

    from serving.app import create_app
    from serving.settings import Settings

    script = tmp_path / "gates" / "build.py"
    script.parent.mkdir()
    script.write_text(FAKE_BUILD)
    shutil.copytree(tiny_model_dir, str(script) + ".model")
    settings = Settings(
        model_dir=tmp_path / "models" / "starter",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        registry=tmp_path / "registry",
        jobs_dir=tmp_path / "jobs",
        bootstrap_admin_key=ADMIN_KEY,
        build_missing=True,
    )
    app = create_app(settings, clock=clock)
    app.state.builder.command = [sys.executable, str(script)]
    return app, script.parent


def _wait_for(cond, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)
    return value


def _ready(tc: TestClient, version: str):
    r = tc.get("/readyz")
    return r.json() if r.status_code == 200 and r.json()["model_version"] == version else None


def _build(tc: TestClient) -> dict:
    r = tc.get("/readyz")
    return r.json()["detail"].get("build", {}) if r.status_code == 503 else r.json()["build"]


def test_serves_the_quick_model_then_switches_to_the_starter(fresh, tmp_path):
    app, gates = fresh
    with TestClient(app) as tc:
        r = tc.get("/readyz")
        assert r.status_code == 503 and "building" in r.json()["detail"]["reason"]
        build = _wait_for(lambda: (b := _build(tc)).get("fraction") and b)
        assert build["stage"] == "quick" and build["fraction"] == 0.5
        assert "quick halfway" in build["message"]

        (gates / "quick.go").touch()
        _wait_for(lambda: _ready(tc, "starter-quick"))
        build = _wait_for(lambda: (b := _build(tc)).get("fraction") and b)
        assert build["stage"] == "starter" and "starter halfway" in build["message"]
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = tc.post("/v1/classify", json={"texts": ["my parcel never arrived"]}, headers=headers)
        assert r.status_code == 200
        assert not (tmp_path / "models" / "starter").exists()  # nothing half-built there

        (gates / "starter.go").touch()
        ready = _wait_for(lambda: _ready(tc, "starter"))
        assert ready["build"]["stage"] == "done"
    models = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert models == ["starter", "starter-quick"]


def test_a_failed_build_says_why_and_serves_nothing(fresh):
    app, gates = fresh
    (gates / "quick.fail").touch()
    (gates / "quick.go").touch()
    with TestClient(app) as tc:
        detail = _wait_for(
            lambda: (d := tc.get("/readyz").json()["detail"])["build"]["stage"] == "failed" and d
        )
        assert "failed (exit 3)" in detail["reason"]
        assert "no public data at /nowhere" in detail["reason"]
        assert tc.get("/healthz").status_code == 200


def test_a_quick_model_left_by_an_earlier_start_is_served_again(fresh, tmp_path, tiny_model_dir):
    import shutil

    app, gates = fresh
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "starter-quick")
    with TestClient(app) as tc:
        ready = _wait_for(lambda: _ready(tc, "starter-quick"))
        assert ready["build"]["stage"] == "starter"
        build = app.state.builder
        _wait_for(lambda: build._proc is not None)
        assert build._proc.poll() is None  # the starter build runs
    # shutting down stopped it: the process is gone, no model where one would be loaded
    assert build._proc.poll() is not None
    assert not (tmp_path / "models" / "starter").exists()


def test_without_build_missing_a_missing_model_is_only_reported(make_app, tmp_path):
    from serving.app import create_app
    from serving.settings import Settings

    app = create_app(
        Settings(
            model_dir=tmp_path / "nothing",
            database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
            registry=tmp_path / "registry",
            jobs_dir=tmp_path / "jobs",
        )
    )
    with TestClient(app) as tc:
        r = tc.get("/readyz")
        assert r.status_code == 503 and "build" not in r.json()["detail"]
    assert not Path(tmp_path / "jobs" / "model-build").exists()

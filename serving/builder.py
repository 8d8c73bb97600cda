"""Building the model the service serves when there is none yet (``build_missing``).

A fresh installation has no model: the starter takes about half an hour to build on two
cores. With ``CARELENS_BUILD_MISSING=true`` (``carelens serve --build-missing``, what
``make serve`` runs) the service starts at once and builds in the background, in a
subprocess running ``carelens starter`` (serving never imports training):

1. the quick model (``carelens starter --quick``: the sparse n-gram path alone, a few
   minutes), served as soon as it is saved;
2. the starter model, hot-swapped in when it is saved.

Each is built in a ``.building`` folder beside its target and moved into place only
when complete, so an interrupted build never leaves a half-written model where the
service or ``make serve`` would load it; a quick model left by an earlier start is
served again rather than rebuilt. ``/readyz`` and the log say which model serves and
how far the build is (the subprocess keeps a progress file).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.modeling import REQUIRED_FILES
from serving.model_versions import LoadFailed, ModelManager

log = logging.getLogger(__name__)


def complete(path: Path) -> bool:
    """A model directory with every file a model needs."""
    return all((path / rel).is_file() for rel in REQUIRED_FILES)


def quick_dir(model_dir: Path) -> Path:
    """Where the quick model goes: beside the model directory."""
    return model_dir.with_name(model_dir.name + "-quick")


class ModelBuilder:
    """Builds the quick model, then the starter, in a background thread; each is served
    (``ModelManager.swap``) as soon as it is complete."""

    def __init__(self, models: ModelManager, model_dir: Path, work_dir: Path) -> None:
        self.models = models
        self.model_dir = Path(model_dir)
        self.work_dir = Path(work_dir)  # progress files and build logs
        self.stage: str | None = None  # quick | starter | done | failed
        self.error: str | None = None
        self.started_at: str | None = None
        #: the build command; ``--out DIR --progress-file FILE`` (and ``--quick``) follow
        self.command = [sys.executable, "-m", "carelens.cli", "starter"]
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def needed(self) -> bool:
        return not complete(self.model_dir)

    # -- the build --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._thread = threading.Thread(target=self._run, name="carelens-model-build", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        steps = (("quick", quick_dir(self.model_dir), ["--quick"]), ("starter", self.model_dir, []))
        for stage, target, extra in steps:
            if self._stop.is_set():
                return
            self.stage = stage
            if stage == "quick" and complete(target):
                log.info("serving the quick model built earlier at %s", target)
            elif not self._build(stage, target, extra):
                return
            if target == self.model_dir:
                self.stage = "done"  # before the swap: whoever sees the starter sees done
            try:
                self.models.serve_dir(target, f"{stage} model built")
            except LoadFailed as exc:
                self._failed(f"the {stage} model was built but does not load: {exc}")
                return

    def _build(self, stage: str, target: Path, extra: list[str]) -> bool:
        tmp = target.with_name(target.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        progress = self.progress_file(stage)
        progress.unlink(missing_ok=True)
        cmd = [*self.command, "--out", str(tmp), "--progress-file", str(progress), *extra]
        log.info("building the %s model into %s (log: %s)", stage, target, self.log_file(stage))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self._stop.is_set():
            return False
        with self.log_file(stage).open("wb") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        rc = self._proc.wait()
        if self._stop.is_set():
            return False
        if rc != 0 or not complete(tmp):
            self._failed(f"building the {stage} model failed (exit {rc}): {self._last_line(stage)}")
            return False
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return True

    def _failed(self, message: str) -> None:
        log.error("%s (log: %s)", message, self.log_file(self.stage or "quick"))
        self.stage, self.error = "failed", message
        if self.models.svc.predictor is None:
            self.models.svc.model_error = message  # what /readyz gives as the reason

    def stop(self) -> None:
        """Stop a running build (the service is shutting down); nothing half-built
        is left where a model is loaded from."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- what /readyz says -------------------------------------------------------------
    def progress_file(self, stage: str) -> Path:
        return self.work_dir / f"{stage}.progress.json"

    def log_file(self, stage: str) -> Path:
        return self.work_dir / f"{stage}.log"

    def _last_line(self, stage: str) -> str:
        try:
            lines = self.log_file(stage).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no log"
        lines = [x.strip() for x in lines.replace("\r", "\n").splitlines() if x.strip()]
        return lines[-1][:500] if lines else "no output"

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage,
            "started_at": self.started_at,
            "serving": self.models.serving,
        }
        if self.stage in ("quick", "starter"):
            try:
                p = json.loads(self.progress_file(self.stage).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                p = {"fraction": 0.0, "message": "starting"}
            out["fraction"] = p.get("fraction", 0.0)
            out["message"] = f"building the {self.stage} model: {p.get('message', '')}"
            out["log"] = str(self.log_file(self.stage))
        if self.error:
            out["error"] = self.error
        return out

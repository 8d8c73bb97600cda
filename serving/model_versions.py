"""The service's side of the learning loop: hot reload of the registry's active
version, and retraining started as a background job (a subprocess running
``carelens retrain``; serving never imports training).

Hot reload: ``ModelManager.follow()`` (called by a poll thread every few seconds and
after every retrain job) loads the active version's Predictor in the calling thread
and then assigns it to ``Services.predictor`` in one step. Requests already running
keep the Predictor they read; the old one is released when the last of them ends. A
version that fails to load leaves the old one serving; the error is reported by
``/readyz`` and ``GET /v1/models`` and the version is not retried until the pointer
changes again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from carelens_client.vocabulary import CHANNELS
from sqlalchemy import Connection, Engine, text

from model.modeling import REQUIRED_FILES, ModelLoadError
from model.onnx_backend import BackendError
from model.predictor import Predictor
from model.registry import Registry, RegistryError, write_json_atomic
from serving.db import lock_key
from serving.deps import Services
from serving.routing import RoutingError

log = logging.getLogger(__name__)


class LoadFailed(Exception):
    """A model version that cannot be served; the message says why."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelManager:
    """Which model the service serves, and switching it without a restart."""

    def __init__(self, svc: Services, registry: Registry | None) -> None:
        self.svc = svc
        self.registry = registry
        self.error: str | None = None
        self.backend_note: str | None = None  # set by load(), reported by swap()
        self.failed_version: str | None = None
        self.loaded_at: str | None = None
        self.switches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- which directory to start from ----------------------------------------------
    def startup_dir(self) -> Path:
        """The registry's active version if it is a complete model directory, else the
        configured model directory."""
        if self.registry is not None:
            try:
                path = self.registry.active_path()
            except RegistryError as exc:
                self.error = str(exc)
                path = None
            if path is not None and all((path / rel).is_file() for rel in REQUIRED_FILES):
                return path
            if path is not None:
                self.error = f"active version {path.name} is incomplete; serving {self.svc.settings.model_dir}"
        return self.svc.settings.model_dir

    @property
    def serving(self) -> str | None:
        pred = self.svc.predictor
        return pred.model_version if pred is not None else None

    # -- loading and switching --------------------------------------------------------
    def load(self, path: Path) -> Predictor:
        """Load a version with the configured backend. A new version has no ONNX export
        until `carelens export` runs on it: it is then served with torch, and ``error``
        says so (the switch must not wait for an export)."""
        s = self.svc.settings
        kwargs = dict(
            batch_size=s.batch_size,
            max_tokens=s.max_tokens,
            num_threads=s.threads,
            evidence=s.evidence,
            rules=s.rules_file,
        )
        try:
            try:
                pred = Predictor.load(path, backend=s.backend, **kwargs)
                note = None
            except ModelLoadError as exc:
                if not isinstance(exc.__cause__, BackendError):
                    raise  # the model itself is broken: refused below
                pred = Predictor.load(path, backend="torch", **kwargs)
                note = f"{path.name}: {exc}; serving it with the torch backend meanwhile"
                log.warning("%s", note)
            self.svc.routing.validate(pred.taxonomy, CHANNELS, pred.rules.names)
        except (ModelLoadError, RoutingError, OSError, ValueError) as exc:
            raise LoadFailed(f"{path.name} failed to load: {exc}") from exc
        self.backend_note = note
        return pred

    def swap(self, pred: Predictor, reason: str) -> None:
        """Serve ``pred`` from now on (one attribute assignment: atomic)."""
        old = self.svc.predictor
        self.svc.predictor = pred
        self.svc.model_error = None
        self.error, self.backend_note = self.backend_note, None
        self.failed_version = None
        self.loaded_at = _now()
        metrics = self.svc.metrics.model_info
        if old is not None:
            metrics.labels(old.model_version or "unknown").set(0)
        metrics.labels(pred.model_version or "unknown").set(1)
        self.switches.append(
            {
                "at": self.loaded_at,
                "from": old.model_version if old else None,
                "to": pred.model_version,
                "reason": reason,
            }
        )
        del self.switches[:-20]
        log.info("now serving %s (%s)", pred.model_version, reason)

    def serve_dir(self, path: Path, reason: str) -> None:
        """Load the model at ``path`` and serve it (``LoadFailed``: the old one stays),
        under the same lock as the registry's switches."""
        with self._lock:
            self.swap(self.load(path), reason)

    def _fail(self, version: str, exc: Exception) -> None:
        self.failed_version = version
        self.error = f"{exc}; still serving {self.serving or 'nothing'}"
        log.error("model reload: %s", self.error)

    def follow(self) -> str | None:
        """Serve the registry's active version if it is not the one served; returns
        the version served afterwards."""
        if self.registry is None:
            return self.serving
        with self._lock:
            try:
                want = self.registry.active()
            except RegistryError as exc:
                self.error = str(exc)
                return self.serving
            if not want or want == self.serving or want == self.failed_version:
                return self.serving
            try:
                pred = self.load(self.registry.path_of(want))
            except LoadFailed as exc:
                self._fail(want, exc)
                return self.serving
            self.swap(pred, "registry pointer changed")
            return self.serving

    def promote(self, version: str, actor: str) -> dict[str, Any]:
        """Load ``version`` first; only if it loads, move the pointer and switch."""
        reg = self._require_registry()
        with self._lock:
            reg.get(version)
            pred = self.load(reg.path_of(version))  # LoadFailed: pointer untouched
            ptr = reg.promote(version, actor=actor, reason="promoted through the API")
            self.swap(pred, f"promoted by {actor}")
            return ptr

    def rollback(self, actor: str) -> dict[str, Any]:
        reg = self._require_registry()
        with self._lock:
            target = reg.rollback_target()
            if target is None:
                reg.rollback(actor=actor)  # raises with the reason
            pred = self.load(reg.path_of(target))
            ptr = reg.rollback(actor=actor)
            self.swap(pred, f"rolled back by {actor}")
            return ptr

    def _require_registry(self) -> Registry:
        if self.registry is None:
            raise RegistryError(
                "the service does not follow a registry (CARELENS_FOLLOW_REGISTRY=false)"
            )
        return self.registry

    # -- the poll thread ------------------------------------------------------------------
    def start(self, interval: float) -> None:
        if self.registry is None or interval <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.follow()
                except Exception:  # never let the poller die
                    log.exception("registry poll failed")

        self._thread = threading.Thread(target=loop, name="carelens-registry-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def status(self) -> dict[str, Any]:
        return {
            "serving": self.serving,
            "loaded_at": self.loaded_at,
            "error": self.error,
            "failed_version": self.failed_version,
            "switches": list(self.switches),
        }


# -- retraining jobs ----------------------------------------------------------------


class JobConflict(Exception):
    pass


@dataclass
class JobRunner:
    """Retraining jobs: one folder per job under ``root`` (job.json, labels.jsonl,
    config.yaml, progress.json, log.txt, result.json); one job at a time.

    With ``engine`` on PostgreSQL, one job at a time across every process over that
    database (the workers of ``carelens serve --workers``, other hosts): a job holds the
    advisory lock ``carelens retrain`` on a connection of its own while it runs; the
    database lets it go when the job ends or its process dies."""

    root: Path
    registry: Registry
    on_done: Callable[[dict[str, Any]], None] | None = None
    engine: Engine | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    def _hold_lock(self) -> Connection | None:
        """The connection holding the retrain lock (None without PostgreSQL), or
        ``JobConflict`` when another process holds it."""
        if self.engine is None or self.engine.dialect.name != "postgresql":
            return None
        conn = self.engine.connect()
        key = lock_key("carelens retrain")
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            conn.commit()
            return conn
        conn.close()
        elsewhere = [j["id"] for j in self.list() if j["status"] == "running"]
        raise JobConflict(
            "a retrain job is running in another service process"
            + (f"; poll GET /v1/models/jobs/{elsewhere[0]}" if elsewhere else "")
        )

    @staticmethod
    def _let_go(conn: Connection | None) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):  # a closed connection has let go already
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
                conn.commit()
            conn.close()

    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def running(self) -> str | None:
        for job_id, proc in self._procs.items():
            if proc.poll() is None:
                return job_id
        return None

    def start_retrain(
        self, labels_jsonl: str, options: dict[str, Any], actor: str, base: Path | None = None
    ) -> dict[str, Any]:
        with self._lock:
            busy = self.running()
            if busy:
                raise JobConflict(
                    f"retrain job {busy} is still running; poll GET /v1/models/jobs/{busy}"
                )
            held = self._hold_lock()
            try:
                job_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
                d = self._dir(job_id)
                d.mkdir(parents=True)
                (d / "labels.jsonl").write_text(labels_jsonl, encoding="utf-8")
                (d / "config.yaml").write_text(yaml.safe_dump(options), encoding="utf-8")
                cmd = [
                    sys.executable, "-m", "carelens.cli", "retrain",
                    "--labels", str(d / "labels.jsonl"),
                    "--config", str(d / "config.yaml"),
                    "--registry", str(self.registry.root),
                    "--result", str(d / "result.json"),
                    "--progress-file", str(d / "progress.json"),
                    "--quiet",
                ]  # fmt: skip
                if base is not None:
                    cmd += ["--base", str(base)]
                env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
                with (d / "log.txt").open("wb") as out:
                    proc = subprocess.Popen(
                        cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                    )
            except BaseException:  # nothing started: let the lock go
                self._let_go(held)
                raise
            self._procs[job_id] = proc
            job = {
                "id": job_id,
                "kind": "retrain",
                "status": "running",
                "pid": proc.pid,
                "started_at": _now(),
                "finished_at": None,
                "returncode": None,
                "by": actor,
                "options": options,
                "labelled_tickets": labels_jsonl.count("\n"),
            }
            write_json_atomic(d / "job.json", job)
        threading.Thread(target=self._wait, args=(job_id, proc, held), daemon=True).start()
        return self.get(job_id)

    def _wait(self, job_id: str, proc: subprocess.Popen, held: Connection | None) -> None:
        rc = proc.wait()
        self._let_go(held)
        d = self._dir(job_id)
        job = json.loads((d / "job.json").read_text(encoding="utf-8"))
        job.update(status="succeeded" if rc == 0 else "failed", returncode=rc, finished_at=_now())
        write_json_atomic(d / "job.json", job)
        if self.on_done is not None:
            try:
                self.on_done(job)
            except Exception:
                log.exception("after job %s", job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job's process ends (for tests and scripts)."""
        proc = self._procs.get(job_id)
        if proc is not None:
            proc.wait(timeout=timeout)
        deadline = None if timeout is None else datetime.now(UTC).timestamp() + timeout
        while self.get(job_id)["status"] == "running":  # the waiter thread writes job.json
            if deadline is not None and datetime.now(UTC).timestamp() > deadline:
                break
            threading.Event().wait(0.05)
        return self.get(job_id)

    def get(self, job_id: str, log_lines: int = 40) -> dict[str, Any]:
        d = self._dir(job_id)
        if "/" in job_id or not (d / "job.json").is_file():
            raise KeyError(job_id)
        job = json.loads((d / "job.json").read_text(encoding="utf-8"))
        if job["status"] == "running" and job_id not in self._procs and not _alive(job["pid"]):
            job["status"] = "lost"  # the service restarted while it ran
        for name in ("progress", "result"):
            path = d / f"{name}.json"
            job[name] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        log_path = d / "log.txt"
        lines = (
            log_path.read_text("utf-8", errors="replace").splitlines() if log_path.is_file() else []
        )
        job["log_tail"] = [ln[-500:] for ln in lines[-log_lines:]]
        return job

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir(), reverse=True):
            if (d / "job.json").is_file():
                job = self.get(d.name, log_lines=0)
                job.pop("log_tail")
                if job.get("result"):
                    r = job["result"]
                    job["result"] = {
                        k: r.get(k) for k in ("version", "decision", "reason", "active")
                    }
                out.append(job)
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The model registry: numbered model versions and the ``active`` pointer.

Training writes versions, the service serves the active one and follows the pointer
(hot reload); both read this module, neither imports the other. Layout::

    registry/
      active.json            {"version": "v0003", "previous": ["v0001", "v0002"], ...}
      history.jsonl          one line per promotion / rollback (who, when, from, to)
      frozen_eval.jsonl      the frozen evaluation set, chosen at the first retrain
      versions/
        v0001/               a model directory (model/modeling.py) + version.json
        v0002/ ...
      staging/               versions being written (moved into versions/ when complete)

``version.json`` holds the version's name, creation time, parent version, status
(``imported``, ``candidate``, ``rejected``), metrics, training-data summary and the
gate's decision. The active pointer is replaced atomically (temp file + ``os.replace``)
under a lock file, so a reader never sees half a pointer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.modeling import REQUIRED_FILES
from model.paths import default_registry_dir

VERSION_RE = re.compile(r"^v(\d{4,})$")
VERSION_FILE = "version.json"
ACTIVE_FILE = "active.json"
HISTORY_FILE = "history.jsonl"
FROZEN_EVAL_FILE = "frozen_eval.jsonl"


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says what to fix."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class ModelVersion:
    name: str
    path: Path
    info: dict[str, Any]

    @property
    def created_at(self) -> str | None:
        return self.info.get("created_at")

    @property
    def parent(self) -> str | None:
        return self.info.get("parent")

    @property
    def status(self) -> str:
        return str(self.info.get("status", "candidate"))

    def summary(self, active: str | None = None) -> dict[str, Any]:
        gate = self.info.get("gate") or {}
        metrics = self.info.get("metrics") or {}
        return {
            "version": self.name,
            "active": self.name == active,
            "status": self.status,
            "created_at": self.created_at,
            "parent": self.parent,
            "decision": gate.get("decision"),
            "reason": gate.get("reason"),
            # the mean figure over (source, task) cells on the frozen set and on the
            # newest labelled tickets held out of its training (None when not scored)
            "frozen_mean": (metrics.get("frozen") or {}).get("mean"),
            "new_tickets_mean": (metrics.get("new_tickets") or {}).get("mean"),
        }


class Registry:
    """A registry directory (see the module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_registry_dir()

    # -- paths --------------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def active_file(self) -> Path:
        return self.root / ACTIVE_FILE

    @property
    def frozen_eval_file(self) -> Path:
        return self.root / FROZEN_EVAL_FILE

    def path_of(self, version: str) -> Path:
        return self.versions_dir / version

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock over pointer and version-number changes (one writer)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------
    def exists(self) -> bool:
        return self.versions_dir.is_dir()

    def names(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        found = [
            p.name
            for p in self.versions_dir.iterdir()
            if VERSION_RE.match(p.name) and (p / VERSION_FILE).is_file()
        ]
        return sorted(found, key=lambda n: int(VERSION_RE.match(n).group(1)))

    def get(self, version: str) -> ModelVersion:
        path = self.path_of(version)
        if not VERSION_RE.match(version) or not (path / VERSION_FILE).is_file():
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"no version {version!r} in {self.root} (versions: {known})")
        try:
            info = json.loads((path / VERSION_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{path / VERSION_FILE}: unreadable: {exc}") from exc
        return ModelVersion(version, path, info)

    def versions(self) -> list[ModelVersion]:
        return [self.get(n) for n in self.names()]

    def pointer(self) -> dict[str, Any]:
        """The active pointer's content ({} when nothing is active yet)."""
        try:
            data = json.loads(self.active_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{self.active_file}: unreadable: {exc}") from exc
        return data if isinstance(data, dict) else {}

    def active(self) -> str | None:
        return self.pointer().get("version")

    def active_path(self) -> Path | None:
        name = self.active()
        return self.path_of(name) if name else None

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]

    # -- writing ------------------------------------------------------------------
    def _next_name(self) -> str:
        numbers = [int(VERSION_RE.match(n).group(1)) for n in self._all_version_dirs()]
        return f"v{max(numbers, default=0) + 1:04d}"

    def _all_version_dirs(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return [p.name for p in self.versions_dir.iterdir() if VERSION_RE.match(p.name)]

    def new_staging(self) -> Path:
        """A fresh folder to write a version into before ``add``."""
        path = self.staging_dir / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def add(self, staged: Path, info: dict[str, Any]) -> ModelVersion:
        """Move a complete model directory from staging into ``versions/`` under the next
        number, with its ``version.json`` (name, created time and ``info``)."""
        staged = Path(staged)
        missing = [rel for rel in REQUIRED_FILES if not (staged / rel).is_file()]
        if missing:
            raise RegistryError(f"{staged}: not a complete model directory (missing {missing})")
        with self.lock():
            name = self._next_name()
            record = {**info, "version": name, "created_at": now_iso()}
            write_json_atomic(staged / VERSION_FILE, record)
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            os.rename(staged, self.path_of(name))
        return self.get(name)

    def import_model(
        self, model_dir: str | Path, note: str | None = None, activate: bool | None = None
    ) -> ModelVersion:
        """Copy an existing model directory in as a new version (hard links where the
        file system allows). The first version becomes active unless ``activate=False``."""
        src = Path(model_dir).expanduser().resolve()
        missing = [rel for rel in REQUIRED_FILES if not (src / rel).is_file()]
        if missing:
            raise RegistryError(f"{src}: not a complete model directory (missing {missing})")
        staged = self.new_staging()
        staged.rmdir()

        def link_or_copy(s: str, d: str) -> None:
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)

        shutil.copytree(
            src, staged, copy_function=link_or_copy, ignore=shutil.ignore_patterns(VERSION_FILE)
        )
        metrics = _read_optional(src / "metrics.json")
        train_config = _read_optional(src / "train_config.json")
        version = self.add(
            staged,
            {
                "status": "imported",
                "parent": None,
                "imported_from": str(src),
                "note": note,
                "metrics": metrics,
                "data_summary": {
                    "sources": [
                        d.get("source") or d.get("path") for d in train_config.get("data", [])
                    ]
                },
            },
        )
        if activate or (activate is None and self.active() is None):
            self.promote(version.name, actor="import", reason="first version")
        return version

    def update_info(self, version: str, **fields: Any) -> ModelVersion:
        """Merge ``fields`` into a version's ``version.json`` (atomically)."""
        with self.lock():
            v = self.get(version)
            write_json_atomic(v.path / VERSION_FILE, {**v.info, **fields})
        return self.get(version)

    def _log(self, event: dict[str, Any]) -> None:
        with (self.root / HISTORY_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, ensure_ascii=False) + "\n")

    def promote(
        self, version: str, actor: str = "cli", reason: str | None = None
    ) -> dict[str, Any]:
        """Make ``version`` active; the one it replaces goes on the rollback stack."""
        self.get(version)  # exists?
        with self.lock():
            ptr = self.pointer()
            current = ptr.get("version")
            if current == version:
                return ptr
            previous = list(ptr.get("previous", []))
            if current:
                previous.append(current)
            new = {
                "version": version,
                "previous": previous,
                "changed_at": now_iso(),
                "changed_by": actor,
                "action": "promote",
            }
            write_json_atomic(self.active_file, new)
            self._log({**_event("promote", actor, current, version), "reason": reason})
        return new

    def rollback(self, actor: str = "cli") -> dict[str, Any]:
        """Make the previously active version active again."""
        with self.lock():
            ptr = self.pointer()
            previous = [
                v for v in ptr.get("previous", []) if (self.path_of(v) / VERSION_FILE).is_file()
            ]
            if not previous:
                raise RegistryError(
                    f"nothing to roll back to: {ptr.get('version') or 'no version'} is the only "
                    "version that was ever active"
                )
            target = previous.pop()
            new = {
                "version": target,
                "previous": previous,
                "changed_at": now_iso(),
                "changed_by": actor,
                "action": "rollback",
            }
            write_json_atomic(self.active_file, new)
            self._log(_event("rollback", actor, ptr.get("version"), target))
        return new

    def rollback_target(self) -> str | None:
        previous = [
            v
            for v in self.pointer().get("previous", [])
            if (self.path_of(v) / VERSION_FILE).is_file()
        ]
        return previous[-1] if previous else None


def _event(action: str, actor: str, old: str | None, new: str) -> dict[str, Any]:
    return {"at": now_iso(), "action": action, "by": actor, "from": old, "to": new}


def _read_optional(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}

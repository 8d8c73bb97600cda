"""Settings read from YAML files, and the retraining settings: the contract between the
service, which starts a retrain job with an admin's options (``POST /v1/models/retrain``
builds its request model from ``RetrainConfig``), and training, which runs it
(``carelens retrain --config``). Declared once here, where the two meet."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

BOUNDS = ("ge", "gt", "le", "lt")


def setting(default: Any, help: str = "", *, per_run: bool = False, **bounds: float) -> Any:
    """A settings field: its default, what it means, whether an admin may set it for one
    run through the API (``per_run``), and its bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    unknown = set(bounds) - set(BOUNDS)
    if unknown:
        raise TypeError(f"unknown bounds {sorted(unknown)}")
    return field(default=default, metadata={"help": help, "per_run": per_run, **bounds})


def out_of_bounds(name: str, value: Any, metadata: Any) -> str | None:
    """Why ``value`` is outside the field's bounds, or None."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    checks = {
        "ge": (lambda b: value >= b, ">="),
        "gt": (lambda b: value > b, ">"),
        "le": (lambda b: value <= b, "<="),
        "lt": (lambda b: value < b, "<"),
    }
    for key, (ok, sign) in checks.items():
        if key in metadata and not ok(metadata[key]):
            return f"{name} must be {sign} {metadata[key]} (got {value})"
    return None


class DictConfig:
    """A dataclass config that round-trips through a dict and refuses unknown keys and
    values outside a field's bounds."""

    kind = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.kind} keys {unknown}; known: {sorted(fields)}")
        for name, value in data.items():
            problem = out_of_bounds(name, value, fields[name].metadata)
            if problem:
                raise ValueError(f"{cls.kind}: {problem}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: Path | None, overrides: dict[str, Any] | None = None) -> Self:
        """The YAML file's keys (none without a file), then the non-None ``overrides``
        (command-line flags) on top."""
        raw: dict[str, Any] = {}
        if path is not None:
            if not Path(path).is_file():
                raise ValueError(f"config file not found: {path}")
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(raw)


@dataclass
class RetrainConfig(DictConfig):
    """Retraining settings (a YAML file for ``carelens retrain --config``; unknown keys
    are refused). Defaults fit 500 new tickets in under 5 minutes on 2 CPU cores. The
    training settings here are a retrain's own: it fine-tunes a trained model for one
    epoch with smaller steps than ``carelens train`` uses from a backbone."""

    kind = "retrain config"

    # the labelled tickets
    holdout_fraction: float = setting(
        0.2, "Newest share of the labelled tickets held out to judge the candidate.",
        per_run=True, gt=0, lt=1,
    )  # fmt: skip
    min_holdout: int = setting(10, "Fewest tickets held out.", per_run=True, ge=1)
    max_holdout: int = setting(200, "Most tickets held out.", ge=1)
    min_labelled: int = setting(20, "Fewest labelled tickets to retrain on.", per_run=True, ge=2)
    ticket_weight: float = setting(
        2.0, "Each training ticket this many times per epoch.", per_run=True, gt=0, le=20
    )
    # label audit
    audit: bool = setting(True, "Audit the agents' labels with cleanlab.")
    exclude_flagged: bool = setting(
        False, "Mask the labels the cleanlab audit flags.", per_run=True
    )
    audit_folds: int = setting(5, "Cross-validation folds of the audit.", ge=2)
    # public data
    public_data: list[dict[str, Any]] | None = setting(
        None, "Public data entries; None: the active model's own (train_config.json)."
    )
    public_rows_per_source: int = setting(
        50, "Replayed training rows per public source.", per_run=True, ge=0
    )
    calibration_rows_per_source: int = setting(
        50, "Validation rows per source (outside the frozen set).", ge=0
    )
    frozen_rows_per_source: int = setting(
        100, "Frozen evaluation rows per source, chosen at the first retrain.", ge=1
    )
    data_dir: str | None = setting(None, "The public data folder.")
    # training
    from_backbone: bool = setting(
        False, "Start from the backbone, not the active model.", per_run=True
    )
    backbone: str | None = setting(None, "The backbone, with from_backbone.")
    epochs: int = setting(1, "Passes over the training rows.", per_run=True, ge=1, le=20)
    batch_size: int = setting(16, "Rows per step.", ge=1)
    learning_rate: float = setting(3e-5, "Encoder step size.", per_run=True, gt=0, lt=1)
    head_learning_rate: float = setting(1e-3, "Heads' step size.", per_run=True, gt=0, lt=1)
    ngram_learning_rate: float = setting(
        1e-2, "N-gram table's step size.", per_run=True, gt=0, lt=1
    )
    max_length: int | None = setting(None, "Tokens per text; None: the active model's.", ge=8)
    seed: int = setting(0, "Random seed.", per_run=True)
    threads: int | None = setting(None, "CPU threads; None: all.", per_run=True, ge=1)
    target_precision: float = setting(
        0.9, "Precision the issue-type thresholds aim for.", gt=0, le=1
    )
    # the gate
    tolerance: float = setting(
        0.01, "Allowed drop on the frozen set (mean over source/task cells).",
        per_run=True, ge=0, le=1,
    )  # fmt: skip
    max_cell_drop: float | None = setting(
        0.05, "Allowed drop of any one frozen (source, task) cell with 50 rows or more.",
        per_run=True, ge=0, le=1,
    )  # fmt: skip
    min_gain: float = setting(
        0.0, "Required gain on the held-out tickets: the lower bound of its paired "
        "bootstrap interval must be above it.", per_run=True, ge=-1, le=1,
    )  # fmt: skip
    confidence: float = setting(
        0.95, "One-sided confidence of that lower bound.", per_run=True, gt=0.5, lt=1
    )
    bootstrap_resamples: int = setting(2000, "Resamples of the bootstrap.", ge=100)
    min_judged: int = setting(
        30, "Fewest held-out tickets the gate judges a candidate on (fewer: never promoted).",
        per_run=True, ge=1,
    )  # fmt: skip
    promote: bool = setting(
        True, "Promote when the gate passes (false: only record the decision).", per_run=True
    )

    @classmethod
    def per_run(cls) -> list[dataclasses.Field]:
        """The fields an admin may set for one run through the API."""
        return [f for f in dataclasses.fields(cls) if f.metadata.get("per_run")]

"""The taxonomy: which tasks a model predicts and with which labels.

Labels are data. The taxonomy file is the single source of label names and their
order; ``id2label`` is derived from it. Three kinds of task exist:

- ``multilabel``: zero, one or several labels per message (sigmoid per label);
- ``multiclass``: exactly one label (softmax);
- ``ordinal``: exactly one label from an ordered scale, listed lowest first
  (cumulative-logit head, so predictions respect the order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASK_KINDS = ("multilabel", "multiclass", "ordinal")

DEFAULT_TAXONOMY_PATH = Path(__file__).resolve().parent.parent / "data" / "taxonomy.yaml"


class TaxonomyError(ValueError):
    """A taxonomy file or value that is not valid; the message says what to fix."""


@dataclass(frozen=True)
class Label:
    name: str
    en: str = ""
    zh: str = ""
    definition: str = ""
    definition_zh: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "en": self.en,
            "zh": self.zh,
            "definition": self.definition,
            "definition_zh": self.definition_zh,
        }

    def display(self, lang: str) -> str:
        """The label's display name in ``lang`` (``en`` or ``zh``), else English, else
        its machine name."""
        return (self.zh if lang == "zh" else "") or self.en or self.name

    def definition_in(self, lang: str) -> str:
        """The label's definition in ``lang``, else the English one."""
        return (self.definition_zh if lang == "zh" else "") or self.definition


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    labels: tuple[Label, ...]
    display: dict[str, str] = field(default_factory=dict)
    description: str = ""
    description_zh: str = ""

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    @property
    def is_multilabel(self) -> bool:
        return self.kind == "multilabel"

    def display_name(self, lang: str) -> str:
        return self.display.get(lang) or self.display.get("en") or self.name

    def label_display(self, lang: str) -> dict[str, str]:
        """Every label's display name in ``lang``."""
        return {label.name: label.display(lang) for label in self.labels}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "display": dict(self.display),
            "description": self.description,
            "description_zh": self.description_zh,
            "labels": [label.to_dict() for label in self.labels],
        }


@dataclass(frozen=True)
class Taxonomy:
    tasks: tuple[Task, ...]
    name: str = "custom"
    version: int | str = 1

    def __post_init__(self) -> None:
        if not self.tasks:
            raise TaxonomyError("a taxonomy needs at least one task")
        seen: set[str] = set()
        for task in self.tasks:
            if task.name in seen:
                raise TaxonomyError(f"task {task.name!r} appears twice")
            seen.add(task.name)

    # -- access -----------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __getitem__(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r} in taxonomy {self.name!r} (tasks: {self.task_names})")

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def display_labels(self, labels: dict[str, list[str]], lang: str) -> dict[str, dict[str, str]]:
        """Each task's labels with their display names in ``lang`` (a task or label the
        taxonomy lacks keeps its machine name)."""
        out: dict[str, dict[str, str]] = {}
        for task_name, values in labels.items():
            names = self[task_name].label_display(lang) if task_name in self else {}
            out[task_name] = {v: names.get(v, v) for v in values}
        return out

    def validate_labels(self, task_name: str, values: list[str]) -> None:
        """Raise TaxonomyError naming the value if a label is not in the task."""
        task = self[task_name]
        allowed = task.label2id
        for value in values:
            if value not in allowed:
                raise TaxonomyError(
                    f"label {value!r} is not in task {task_name!r}; allowed: {task.label_names}"
                )
        if task.kind != "multilabel" and len(values) != 1:
            raise TaxonomyError(
                f"task {task_name!r} is {task.kind}: exactly one label expected, got {values}"
            )

    # -- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "tasks": [t.to_dict() for t in self.tasks],
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = (
            json.dumps(self.to_dict(), ensure_ascii=False, indent=2)
            if path.suffix == ".json"
            else yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False)
        )
        path.write_text(text, encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any, source: str = "taxonomy") -> Taxonomy:
        if not isinstance(data, dict) or "tasks" not in data:
            raise TaxonomyError(f"{source}: expected a mapping with a 'tasks' list")
        raw_tasks = data["tasks"]
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise TaxonomyError(f"{source}: 'tasks' must be a non-empty list")
        tasks = []
        for i, raw in enumerate(raw_tasks):
            where = f"{source}: tasks[{i}]"
            if not isinstance(raw, dict):
                raise TaxonomyError(f"{where}: expected a mapping")
            name = raw.get("name")
            if not isinstance(name, str) or not name.isidentifier():
                raise TaxonomyError(f"{where}: 'name' must be an identifier, got {name!r}")
            kind = raw.get("kind")
            if kind not in TASK_KINDS:
                raise TaxonomyError(
                    f"{where} ({name}): 'kind' must be one of {TASK_KINDS}, got {kind!r}"
                )
            raw_labels = raw.get("labels")
            if not isinstance(raw_labels, list) or not raw_labels:
                raise TaxonomyError(f"{where} ({name}): 'labels' must be a non-empty list")
            labels = []
            for j, rl in enumerate(raw_labels):
                if isinstance(rl, str):
                    rl = {"name": rl}
                if (
                    not isinstance(rl, dict)
                    or not isinstance(rl.get("name"), str)
                    or not rl["name"]
                ):
                    raise TaxonomyError(f"{where} ({name}): labels[{j}] needs a 'name'")
                if rl["name"] in ("-", "") or "|" in rl["name"]:
                    raise TaxonomyError(
                        f"{where} ({name}): label name {rl['name']!r} is reserved ('-' and '|' mark label sets)"
                    )
                labels.append(
                    Label(
                        name=rl["name"],
                        en=str(rl.get("en", "")),
                        zh=str(rl.get("zh", "")),
                        definition=str(rl.get("definition", "")),
                        definition_zh=str(rl.get("definition_zh", "")),
                    )
                )
            names = [label.name for label in labels]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise TaxonomyError(f"{where} ({name}): duplicate labels {dupes}")
            min_labels = 1 if kind == "multilabel" else 2
            if len(labels) < min_labels:
                raise TaxonomyError(
                    f"{where} ({name}): a {kind} task needs at least {min_labels} labels"
                )
            tasks.append(
                Task(
                    name=name,
                    kind=kind,
                    labels=tuple(labels),
                    display={k: str(v) for k, v in (raw.get("display") or {}).items()},
                    description=str(raw.get("description", "")),
                    description_zh=str(raw.get("description_zh", "")),
                )
            )
        return cls(
            tasks=tuple(tasks), name=str(data.get("name", "custom")), version=data.get("version", 1)
        )

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        if not path.is_file():
            raise TaxonomyError(f"taxonomy file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise TaxonomyError(
                f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
            ) from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def default(cls) -> Taxonomy:
        return cls.load(DEFAULT_TAXONOMY_PATH)

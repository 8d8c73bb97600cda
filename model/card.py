"""The model card: the README.md a model directory carries (what it was trained on, its
figures on the held-out rows against the TF-IDF floor), and the comparison table it
shares with the evaluation reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.modeling import CarelensModel


def comparison_table(cells: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of model vs floor per (source, task): the rows of
    ``training.evaluate.comparison``. Shared by the model card and evaluation reports."""
    lines = [
        "| source | task | rows | model | TF-IDF floor | beats it | +/− rows | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        floor = "–" if c["baseline"] is None else f"{c['baseline']:.3f}"
        beats = "–" if c["beats_baseline"] is None else ("yes" if c["beats_baseline"] else "**no**")
        pr = c.get("paired")
        split = "–" if pr is None else f"{pr['model_only']}/{pr['floor_only']}"
        pv = "–" if pr is None else f"{pr['p_value']:.2g}"
        lines.append(
            f"| {c['source']} | {c['task']} | {c['n']} | {c['model']:.3f} | {floor} | {beats} "
            f"| {split} | {pv} |"
        )
    return lines


def render_model_card(model: CarelensModel) -> str:
    cfg = model.config
    tc = model.train_config
    lines = [
        "# carelens model",
        "",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Backbone: `{cfg.backbone}`; "
        f"max tokens {cfg.max_length}; vocabulary {model.tokenizer.get_vocab_size()} tokens; "
        f"n-gram side channel: {'on' if cfg.ngram.enabled else 'off'}; "
        f"sparse TF-IDF n-gram path: {'on' if cfg.sparse.enabled else 'off'}.",
        "",
    ]
    if not tc:
        lines += [
            "**Untrained**: the heads are random. Train it with `carelens train` before relying on its labels.",
            "",
        ]
    lines += ["## Tasks and labels", ""]
    for task in model.taxonomy:
        th = model.thresholds.get(task.name, {})
        lines += [
            f"### {task.name} ({task.kind})",
            "",
            f"Review threshold (confidence below → needs_review): {th.get('review_threshold')}; "
            f"temperature {model.calibration[task.name]['temperature']:.3f}.",
            "",
            *([task.description] if task.description else []),
            *([task.description_zh] if task.description_zh else []),
            "",
            "| label | English | 中文 | definition | 定义 |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{lab.name}` | {lab.en} | {lab.zh} | {lab.definition} | {lab.definition_zh} |"
            for lab in task.labels
        ]
        lines.append("")
    lines += ["## Training data", ""]
    if tc.get("data"):
        lines += ["| source | file | weight |", "|---|---|---|"]
        for d in tc["data"]:
            lines.append(f"| {d.get('source', '')} | {d.get('path', '')} | {d.get('weight', 1)} |")
        lines.append("")
        hp = {k: tc[k] for k in ("epochs", "batch_size", "learning_rate", "seed") if k in tc}
        if hp:
            lines += ["Hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in hp.items()), ""]
    else:
        lines += ["None recorded.", ""]
    test = model.metrics.get("test")
    if test:
        lines += [
            "## Test rows",
            "",
            f"Held out of training and never calibrated on; `{test['command']}` on "
            f"{test['date']} ({test['backend']} backend, {test['rows']} rows). Accuracy "
            "(micro-F1 for multi-label tasks) beside the TF-IDF floor fitted on the same "
            "training rows; +/−: rows only the model / only the floor gets right, with the "
            "exact McNemar p-value.",
            "",
            *comparison_table(test["cells"]),
            "",
        ]
    lines += ["## Metrics", ""]
    rest = {k: v for k, v in model.metrics.items() if k != "test"}
    if rest:
        lines += [
            "Training history and the validation (dev) rows' figures:",
            "",
            "```json",
            json.dumps(rest, indent=2, ensure_ascii=False)[:20000],
            "```",
            "",
        ]
    else:
        lines += ["Not evaluated yet (`carelens evaluate`).", ""]
    return "\n".join(lines)

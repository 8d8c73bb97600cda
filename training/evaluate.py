"""Evaluation reports: metrics per task and per source, plots, and the TF-IDF floor.

Metrics (scikit-learn): for single-label tasks accuracy, macro-F1, per-label
precision/recall/F1, MAE in ranks for ordinal tasks; for multi-label tasks micro- and
macro-F1, subset accuracy and per-label figures. For every task the expected
calibration error (15 equal-width bins of the decision confidence; per-label
probabilities for multi-label tasks) and coverage / accuracy at the model's review
threshold. Tasks a source does not label are skipped.

A public source whose labels cover only part of a single-label task (the Chinese review
sets are positive/negative, without neutral) is scored within its label space, for the
model and the floor alike: the prediction is the most probable label the source can
have (``within_label_space``). The floor, trained on those rows, never predicts outside
it; the model, trained for the whole taxonomy, would otherwise be marked wrong for every
neutral it gives to a mildly positive hotel review.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from model.calibration import confidence_and_correct
from model.card import comparison_table
from model.charts import chart_fonts, chart_lang
from model.ngrams import SparseConfig, sparse_vectorizers
from model.predictor import Predictor, rated_text
from model.taxonomy import Task, Taxonomy
from training.data import Example, example_rating, targets
from training.sources import SourceMapping, available_sources

N_BINS = 15


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = N_BINS
) -> float:
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = N_BINS
) -> list[dict[str, float]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "n": int(m.sum()),
                    "confidence": float(confidence[m].mean()),
                    "accuracy": float(correct[m].mean()),
                }
            )
    return out


def task_metrics(
    task: Task, probs: np.ndarray, target: np.ndarray, thresholds: dict[str, Any]
) -> dict[str, Any] | None:
    """Metrics of one task on the rows labelled for it (None if there are none)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    names = task.label_names
    if task.kind == "multilabel":
        mask = (target >= 0).all(1)
        if not mask.any():
            return None
        lt = thresholds.get("label_thresholds", {})
        th = np.array([lt.get(n, 0.5) for n in names])
        p, gold = probs[mask], target[mask] > 0.5
        pred = p >= th
        prec, rec, f1, sup = precision_recall_fscore_support(
            gold, pred, average=None, zero_division=0
        )
        conf, correct = confidence_and_correct(task, probs, target, th)
        per_label_conf = np.where(pred, p, 1 - p).ravel()
        per_label_ok = (pred == gold).ravel()
        m: dict[str, Any] = {
            "n": int(mask.sum()),
            "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
            "macro_f1": float(
                f1_score(gold[:, sup > 0], pred[:, sup > 0], average="macro", zero_division=0)
            )
            if (sup > 0).any()
            else float("nan"),
            "subset_accuracy": float((pred == gold).all(1).mean()),
            "ece": expected_calibration_error(per_label_conf, per_label_ok),
            "reliability": reliability_bins(per_label_conf, per_label_ok),
        }
    else:
        mask = target >= 0
        if not mask.any():
            return None
        p, gold = probs[mask], target[mask]
        pred_idx = p.argmax(1)
        prec, rec, f1, sup = precision_recall_fscore_support(
            gold, pred_idx, labels=list(range(len(names))), average=None, zero_division=0
        )
        conf, correct = confidence_and_correct(task, probs, target)
        present = sorted(set(gold.tolist()))
        m = {
            "n": int(mask.sum()),
            "accuracy": float(accuracy_score(gold, pred_idx)),
            "macro_f1": float(
                f1_score(gold, pred_idx, labels=present, average="macro", zero_division=0)
            ),
            "ece": expected_calibration_error(conf, correct),
            "reliability": reliability_bins(conf, correct),
            "confusion": _confusion(gold, pred_idx, len(names)),
        }
        if task.kind == "ordinal":
            m["mae"] = float(np.abs(gold - pred_idx).mean())
    review_t = float(thresholds.get("review_threshold", 0.5))
    accepted = conf >= review_t
    m["review_threshold"] = review_t
    m["coverage"] = float(accepted.mean())
    m["accuracy_when_confident"] = (
        float(correct[accepted].mean()) if accepted.any() else float("nan")
    )
    m["per_label"] = {
        n: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(sup[i]),
        }
        for i, n in enumerate(names)
    }
    return m


def _confusion(gold: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(gold, pred, labels=list(range(k))).tolist()


def headline(task: Task, m: dict[str, Any]) -> float:
    """The one number per task used for comparisons: accuracy (single-label) or micro-F1."""
    return m["micro_f1"] if task.kind == "multilabel" else m["accuracy"]


def _by_source(examples: list[Example]) -> list[tuple[str, list[int]]]:
    """(source, row indices) per source, sorted by source name; the rows of a labelled
    file reported per source (``NAME/SOURCE``) are also pooled per language, as
    ``NAME (en)``, ``NAME (zh)``."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_source[ex.source].append(i)
        if "/" in ex.source and ex.meta.get("lang"):
            by_source[f"{ex.source.split('/')[0]} ({ex.meta['lang']})"].append(i)
    return sorted(by_source.items())


@functools.cache
def _source_spaces(source: str) -> dict[str, frozenset[str]]:
    path = available_sources().get(source)
    if path is None:
        return {}
    mapping = SourceMapping.load(path)
    spaces = {name: mapping.label_space(name) for name in mapping.tasks}
    return {name: frozenset(space) for name, space in spaces.items() if space}


def within_label_space(
    taxonomy: Taxonomy, source: str, probs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``probs`` of one public source's rows with each single-label task restricted to
    the labels the source can have (renormalised); other sources and tasks unchanged."""
    spaces = _source_spaces(source)
    out = dict(probs)
    for task in taxonomy:
        space = spaces.get(task.name)
        if task.kind == "multilabel" or not space or len(space) >= task.num_labels:
            continue
        keep = np.array([name in space for name in task.label_names])
        p = np.where(keep, probs[task.name], 0.0)
        out[task.name] = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    return out


def _cell_probs(
    taxonomy: Taxonomy, source: str, probs: dict[str, np.ndarray], idx: list[int]
) -> dict[str, np.ndarray]:
    return within_label_space(taxonomy, source, {k: v[idx] for k, v in probs.items()})


def score_sets(
    taxonomy: Taxonomy,
    thresholds: dict[str, Any],
    probs: dict[str, np.ndarray],
    examples: list[Example],
) -> dict[str, dict[str, Any]]:
    """{source: {task: metrics}} for probabilities aligned with ``examples``."""
    out: dict[str, dict[str, Any]] = {}
    for source, idx in _by_source(examples):
        rows = [examples[i] for i in idx]
        y = targets(rows, taxonomy)
        cell = _cell_probs(taxonomy, source, probs, idx)
        out[source] = {}
        for task in taxonomy:
            m = task_metrics(
                task, cell[task.name], y[task.name].numpy(), thresholds.get(task.name, {})
            )
            if m is not None:
                out[source][task.name] = m
    return out


def paired_counts(
    taxonomy: Taxonomy,
    thresholds: dict[str, Any],
    probs: dict[str, np.ndarray],
    base_probs: dict[str, np.ndarray],
    examples: list[Example],
) -> dict[str, dict[str, dict[str, Any]]]:
    """{source: {task: paired figures}} of the model against the floor on the same rows:
    how many rows only the model gets right, how many only the floor (the exact label
    set for multi-label tasks), and the exact McNemar p-value of that split (a
    two-sided binomial test of the discordant rows against 1:1). A one-row gap on a
    small cell has p = 1.0: it says nothing about which is better."""
    from scipy.stats import binomtest

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for source, idx in _by_source(examples):
        y = targets([examples[i] for i in idx], taxonomy)
        cell, base_cell = (_cell_probs(taxonomy, source, p, idx) for p in (probs, base_probs))
        for task in taxonomy:
            target = y[task.name].numpy()
            lt = thresholds.get(task.name, {}).get("label_thresholds", {})
            th = np.array([lt.get(n, 0.5) for n in task.label_names])
            _, ours = confidence_and_correct(task, cell[task.name], target, th)
            if not len(ours):
                continue
            floor_th = np.full(task.num_labels, 0.5)
            _, floor = confidence_and_correct(task, base_cell[task.name], target, floor_th)
            model_only, floor_only = int((ours & ~floor).sum()), int((floor & ~ours).sum())
            discordant = model_only + floor_only
            out.setdefault(source, {})[task.name] = {
                "model_only": model_only,
                "floor_only": floor_only,
                "p_value": float(binomtest(model_only, discordant).pvalue) if discordant else 1.0,
            }
    return out


# -- the floor: TF-IDF + logistic regression ---------------------------------------


class TfidfBaseline:
    """Character 1-4-gram (``char_wb``) + word 1-2-gram TF-IDF, one logistic regression
    per task (one-vs-rest for multi-label), trained on the rows labelled for each task.
    The features are the sparse path's (``model.ngrams.sparse_vectorizers``)."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.vectorizer = None
        self.models: dict[str, Any] = {}

    def fit(self, examples: list[Example]) -> TfidfBaseline:
        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        self._char, self._word = sparse_vectorizers(SparseConfig(enabled=True))
        texts = [e.text for e in examples]
        self._char.fit(texts)
        self._word.fit(texts)
        self._hstack = hstack
        x = self._features(texts)
        y = targets(examples, self.taxonomy)
        for task in self.taxonomy:
            t = y[task.name].numpy()
            if task.kind == "multilabel":
                mask = (t >= 0).all(1)
                cols = t[mask].sum(0) > 0
                if mask.sum() < 2 or not cols.any():
                    continue
                clf = OneVsRestClassifier(LogisticRegression(max_iter=1000, C=4.0))
                clf.fit(x[mask], t[mask][:, cols].astype(int))
                self.models[task.name] = (clf, cols)
            else:
                mask = t >= 0
                if mask.sum() < 2 or len(set(t[mask].tolist())) < 2:
                    continue
                clf = LogisticRegression(max_iter=1000, C=4.0)
                clf.fit(x[mask], t[mask])
                self.models[task.name] = (clf, None)
        return self

    def _features(self, texts: list[str]):
        return self._hstack([self._char.transform(texts), self._word.transform(texts)]).tocsr()

    def predict_proba(self, texts: list[str]) -> dict[str, np.ndarray]:
        x = self._features(texts)
        out = {}
        for task in self.taxonomy:
            p = np.full((len(texts), task.num_labels), 0.0, dtype=np.float32)
            if task.name in self.models:
                clf, cols = self.models[task.name]
                if cols is not None:
                    p[:, cols] = clf.predict_proba(x)
                else:
                    p[:, clf.classes_] = clf.predict_proba(x)
            out[task.name] = p
        return out


# -- the report -------------------------------------------------------------------


def evaluate(
    predictor: Predictor,
    examples: list[Example],
    out_dir: str | Path,
    baseline_train: list[Example] | None = None,
    ratings: bool = True,
    rules: bool = True,
    lang: str = "en",
) -> dict[str, Any]:
    """Score ``predictor`` (and the TF-IDF floor) on ``examples``; write the report
    (its plots name tasks and labels by their display names in ``lang``).
    ``ratings``: rated rows are read with their star rating (the floor reads the same
    lead-in, ``model.predictor.rated_text``); ``rules``: the critical rules decide where
    they fire, for the model and the floor alike (as every prediction does)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    taxonomy = predictor.taxonomy
    thresholds = predictor.model.thresholds
    texts = [e.text for e in examples]
    stars = [example_rating(e) if ratings else None for e in examples]
    probs = predictor.predict_proba(texts, ratings=stars, rules=rules)
    report: dict[str, Any] = {
        "model": str(predictor.model.path),
        "n": len(examples),
        "ratings": ratings,
        "rules": rules,
        "sources": score_sets(taxonomy, thresholds, probs, examples),
    }
    if baseline_train:
        base = TfidfBaseline(taxonomy).fit(baseline_train)
        bprobs = base.predict_proba([rated_text(t, r) for t, r in zip(texts, stars, strict=True)])
        if rules:
            predictor.apply_rules_to_probs(texts, bprobs)
        default_th = {t.name: {"review_threshold": 0.5} for t in taxonomy}
        report["baseline"] = {
            "name": "tfidf_word12_char14_logreg",
            "train_rows": len(baseline_train),
            "sources": score_sets(taxonomy, default_th, bprobs, examples),
            "paired": paired_counts(taxonomy, thresholds, probs, bprobs, examples),
        }
    (out_dir / "metrics.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    plots = write_plots(taxonomy, report, out_dir, lang)
    (out_dir / "report.md").write_text(render_report(taxonomy, report, plots), encoding="utf-8")
    return report


def comparison(taxonomy: Taxonomy, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of (source, task, model, baseline, model beats baseline, and the paired
    figures of ``paired_counts`` where the report has them, else None)."""
    rows = []
    base = report.get("baseline", {}).get("sources", {})
    paired = report.get("baseline", {}).get("paired", {})
    for source, tasks in report["sources"].items():
        for name, m in tasks.items():
            task = taxonomy[name]
            b = base.get(source, {}).get(name)
            rows.append(
                {
                    "source": source,
                    "task": name,
                    "n": m["n"],
                    "model": headline(task, m),
                    "baseline": headline(task, b) if b else None,
                    "beats_baseline": (headline(task, m) > headline(task, b)) if b else None,
                    "paired": paired.get(source, {}).get(name),
                }
            )
    return rows


def write_plots(
    taxonomy: Taxonomy, report: dict[str, Any], out_dir: Path, lang: str = "en"
) -> dict[str, list[str]]:
    """Reliability diagrams, confusion matrices and per-label F1 bars, their tasks and
    labels by display name in ``lang`` (English where no CJK font is installed)."""
    with chart_fonts(chart_lang(lang)):
        return _write_plots(taxonomy, report, out_dir, chart_lang(lang))


def _write_plots(
    taxonomy: Taxonomy, report: dict[str, Any], out_dir: Path, lang: str
) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, list[str]] = defaultdict(list)
    for task in taxonomy:
        shown = task.display_name(lang)
        names = list(task.label_display(lang).values())
        per_source = [(s, t[task.name]) for s, t in report["sources"].items() if task.name in t]
        if not per_source:
            continue
        # reliability diagram: one line per source
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
        for source, m in per_source:
            bins = m["reliability"]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                "o-",
                ms=3,
                label=f"{source} (ECE {m['ece']:.3f})",
            )
        ax.set(
            xlabel="confidence",
            ylabel="accuracy",
            title=f"Reliability: {shown}",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        name = f"reliability_{task.name}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        plots[task.name].append(name)
        # confusion matrix (single-label tasks), summed over sources
        if task.kind != "multilabel":
            cm = np.sum([np.array(m["confusion"]) for _, m in per_source], axis=0)
            fig, ax = plt.subplots(
                figsize=(1.2 + 0.7 * task.num_labels, 1.0 + 0.7 * task.num_labels)
            )
            norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(task.num_labels), names, rotation=45, ha="right")
            ax.set_yticks(range(task.num_labels), names)
            for i in range(task.num_labels):
                for j in range(task.num_labels):
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
            ax.set(xlabel="predicted", ylabel="true", title=f"Confusion: {shown}")
            fig.tight_layout()
            name = f"confusion_{task.name}.png"
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            plots[task.name].append(name)
        else:
            # per-label F1 bars (the multi-label analogue of a confusion matrix)
            fig, ax = plt.subplots(figsize=(7, 3.5))
            width = 0.8 / len(per_source)
            for k, (source, m) in enumerate(per_source):
                f1 = [
                    m["per_label"][n]["f1"] if m["per_label"][n]["support"] else np.nan
                    for n in task.label_names
                ]
                ax.bar(np.arange(task.num_labels) + k * width, f1, width, label=source)
            ax.set_xticks(
                np.arange(task.num_labels) + 0.4 - width / 2,
                names,
                rotation=45,
                ha="right",
                fontsize=7,
            )
            ax.set(ylabel="F1", ylim=(0, 1), title=f"Per-label F1: {shown}")
            ax.legend(fontsize=7)
            fig.tight_layout()
            name = f"per_label_f1_{task.name}.png"
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            plots[task.name].append(name)
    return plots


def render_report(taxonomy: Taxonomy, report: dict[str, Any], plots: dict[str, list[str]]) -> str:
    lines = ["# Evaluation report", "", f"Model: `{report['model']}` — {report['n']} rows.", ""]
    rows = comparison(taxonomy, report)
    lines += [
        "## Model vs the TF-IDF floor (accuracy; micro-F1 for multi-label tasks)",
        "",
        "+/− rows: rows only the model / only the floor gets right on the same rows (the "
        "exact label set for multi-label tasks); p: the exact McNemar p-value of that "
        "split (small: the gap is unlikely to be chance). A public source whose labels "
        "cover part of a task (positive/negative, no neutral) is scored within them, for "
        "both.",
        "",
        *comparison_table(rows),
        "",
    ]
    for source, tasks in report["sources"].items():
        lines += [f"## {source}", ""]
        for name, m in tasks.items():
            task = taxonomy[name]
            head = (
                f"micro-F1 {m['micro_f1']:.3f}, macro-F1 {m['macro_f1']:.3f}, subset accuracy {m['subset_accuracy']:.3f}"
                if task.kind == "multilabel"
                else f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}"
                + (f", MAE {m['mae']:.3f}" if "mae" in m else "")
            )
            lines += [
                f"### {name} ({m['n']} rows)",
                "",
                f"{head}; ECE {m['ece']:.3f}; at review threshold {m['review_threshold']:.2f}: "
                f"coverage {m['coverage']:.3f}, accuracy {m['accuracy_when_confident']:.3f}.",
                "",
                "| label | precision | recall | F1 | support |",
                "|---|---|---|---|---|",
            ]
            for label, v in m["per_label"].items():
                if v["support"]:
                    lines.append(
                        f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                    )
            lines.append("")
    lines += ["## Plots", ""]
    for names in plots.values():
        lines += [f"![{n}]({n})" for n in names]
    lines.append("")
    return "\n".join(lines)

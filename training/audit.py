"""Label audit before retraining: cleanlab flags agent labels that are probably wrong.

Out-of-sample predicted probabilities come from a cheap model cross-validated on the
labelled tickets themselves (TF-IDF word 1-2 + character 1-4 grams, logistic
regression per task, k folds): every row is scored by a model that never saw it.
``cleanlab.filter.find_label_issues`` then flags rows whose given label disagrees
with what the rest of the agents' labels imply. Flagged labels are reported, and
excluded from training and evaluation only if asked; they are never changed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from model.taxonomy import Taxonomy
from training.data import Example

log = logging.getLogger(__name__)
EPS = 1e-4
# below this many labelled rows per task the cross-validated model is too weak for its
# disagreements with the agents to say much: the audit still runs, and says so
MEANINGFUL_ROWS = 100
METHOD = (
    "cleanlab.filter.find_label_issues on {folds}-fold cross-validated TF-IDF "
    "(word 1-2 + char 2-4 grams) logistic-regression probabilities"
)


def _features(texts: list[str]):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(
        analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=20_000
    )
    char = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True, max_features=30_000
    )
    return hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()


def _cv_probs(x, y: np.ndarray, k: int, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold class probabilities [n, k] for integer labels ``y`` in 0..k-1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.multiclass import OneVsRestClassifier

    out = np.zeros((len(y), k))
    for train_idx, test_idx in KFold(folds, shuffle=True, random_state=seed).split(y):
        classes = np.unique(y[train_idx])
        if len(classes) == 1:
            out[np.ix_(test_idx, classes)] = 1.0
            continue
        # liblinear (one-vs-rest, normalised): ~10x faster than lbfgs on these sizes
        clf = OneVsRestClassifier(LogisticRegression(C=4.0, solver="liblinear"))
        clf.fit(x[train_idx], y[train_idx])
        out[np.ix_(test_idx, clf.classes_)] = clf.predict_proba(x[test_idx])
    out += EPS
    return out / out.sum(1, keepdims=True)


def _cv_binary(x, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold P(label) per column of a 0/1 matrix ``y`` [n, k]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    out = np.zeros(y.shape)
    for train_idx, test_idx in KFold(folds, shuffle=True, random_state=seed).split(y):
        for j in range(y.shape[1]):
            col = y[train_idx, j]
            if col.min() == col.max():
                out[test_idx, j] = float(col[0])
                continue
            clf = LogisticRegression(C=4.0, solver="liblinear")
            clf.fit(x[train_idx], col)
            out[test_idx, j] = clf.predict_proba(x[test_idx])[:, 1]
    return np.clip(out, EPS, 1 - EPS)


def audit_labels(
    examples: list[Example], taxonomy: Taxonomy, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Flag probably-wrong labels per task. Returns ``{"method", "tasks": {task:
    {"rows", "flagged"} or {"skipped": reason}}, "flagged": [...]}``; each flagged
    entry has the row index, id, task, given label(s), the cross-validated model's
    suggestion and its probability for the given label(s)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.multilabel_classification.filter import (
        find_label_issues as find_multilabel_issues,
    )

    report: dict[str, Any] = {"method": METHOD.format(folds=folds), "tasks": {}, "flagged": []}
    if len(examples) < MEANINGFUL_ROWS:
        report["warning"] = (
            f"{len(examples)} labelled rows: too few for the audit to mean much (its model "
            f"learns from the same rows it judges; at least {MEANINGFUL_ROWS} per task are "
            "needed); read its flags as hints, not findings"
        )
    if len(examples) < 2 * folds:
        report["skipped"] = f"{len(examples)} labelled rows; the audit needs at least {2 * folds}"
        return report
    x_all = _features([e.text for e in examples])
    for task in taxonomy:
        rows = [i for i, e in enumerate(examples) if e.labels.get(task.name) is not None]
        if task.kind != "multilabel":
            rows = [i for i in rows if examples[i].labels[task.name]]
        if len(rows) < 2 * folds:
            report["tasks"][task.name] = {
                "rows": len(rows),
                "skipped": f"needs at least {2 * folds} labelled rows",
            }
            continue
        x = x_all[rows]
        try:
            if task.kind == "multilabel":
                present = sorted(
                    {task.label2id[v] for i in rows for v in examples[i].labels[task.name]}
                )
                if not present:
                    report["tasks"][task.name] = {"rows": len(rows), "skipped": "no labels given"}
                    continue
                col = {c: j for j, c in enumerate(present)}
                y = np.zeros((len(rows), len(present)), dtype=int)
                given = []
                for r, i in enumerate(rows):
                    ids = [col[task.label2id[v]] for v in examples[i].labels[task.name]]
                    y[r, ids] = 1
                    given.append(ids)
                probs = _cv_binary(x, y, folds, seed)
                issues = find_multilabel_issues(given, probs)
                names = [task.label_names[c] for c in present]
                for r in np.flatnonzero(issues):
                    suggested = [names[j] for j in np.flatnonzero(probs[r] >= 0.5)]
                    report["flagged"].append(
                        _entry(
                            examples,
                            rows[r],
                            task.name,
                            [names[j] for j in given[r]],
                            suggested,
                            float(
                                np.prod(
                                    [
                                        probs[r, j] if y[r, j] else 1 - probs[r, j]
                                        for j in range(len(present))
                                    ]
                                )
                            ),
                        )
                    )
            else:
                ids = np.array([task.label2id[examples[i].labels[task.name][0]] for i in rows])
                present = sorted(set(ids.tolist()))
                if len(present) < 2:
                    report["tasks"][task.name] = {"rows": len(rows), "skipped": "one class only"}
                    continue
                col = {c: j for j, c in enumerate(present)}
                y = np.array([col[c] for c in ids])
                probs = _cv_probs(x, y, len(present), folds, seed)
                issues = find_label_issues(y, probs)
                for r in np.flatnonzero(issues):
                    report["flagged"].append(
                        _entry(
                            examples,
                            rows[r],
                            task.name,
                            task.label_names[present[y[r]]],
                            task.label_names[present[int(probs[r].argmax())]],
                            float(probs[r, y[r]]),
                        )
                    )
        except Exception as exc:  # cleanlab/sklearn refuse degenerate inputs in many ways
            log.warning("audit of %s skipped: %s", task.name, exc)
            report["tasks"][task.name] = {"rows": len(rows), "skipped": str(exc)[:300]}
            continue
        report["tasks"][task.name] = {
            "rows": len(rows),
            "flagged": sum(1 for f in report["flagged"] if f["task"] == task.name),
        }
        if len(rows) < MEANINGFUL_ROWS:
            report["tasks"][task.name]["warning"] = (
                f"{len(rows)} labelled rows: too few for these flags to mean much"
            )
    return report


def _entry(
    examples: list[Example], i: int, task: str, given: Any, suggested: Any, p_given: float
) -> dict[str, Any]:
    ex = examples[i]
    return {
        "row": i,
        "id": ex.meta.get("id"),
        "text": ex.text[:300],
        "task": task,
        "given": given,
        "suggested": suggested,
        "p_given": round(p_given, 4),
        "labelled_by": ex.meta.get("labelled_by"),
    }


def exclude_flagged(examples: list[Example], report: dict[str, Any]) -> list[Example]:
    """Copies of ``examples`` with each flagged task label masked (not labelled);
    rows left with no label at all are dropped."""
    masked: dict[int, set[str]] = {}
    for f in report.get("flagged", []):
        masked.setdefault(f["row"], set()).add(f["task"])
    out = []
    for i, ex in enumerate(examples):
        if i not in masked:
            out.append(ex)
            continue
        labels = {t: (None if t in masked[i] else v) for t, v in ex.labels.items()}
        if any(v is not None for v in labels.values()):
            out.append(Example(text=ex.text, labels=labels, meta=dict(ex.meta)))
    return out

"""Fitting the sparse linear path (``model.classifier``'s TF-IDF n-gram map).

scikit-learn's ``TfidfVectorizer``s of the evaluation floor (``model.ngrams.
sparse_vectorizers``: ``char_wb`` 1-4-grams and word 1-2-grams, sublinear TF, smoothed
idf, each block L2-normalised) are fitted on the rows; their vocabularies and idf go
into the model. One scikit-learn logistic regression per task (multinomial for
multiclass and ordinal tasks, one binary regression per label for multi-label ones)
is fitted on the rows labelled for that task, and its coefficients are copied into
the model. At prediction time the model computes exactly these logistic regressions'
logits in torch: fitted on the floor's training rows, the path alone is the floor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix, hstack
from tqdm.auto import tqdm

from model.classifier import class_weights
from model.modeling import CarelensModel
from model.ngrams import SparseVocab, sparse_vectorizers
from training.data import Example, targets

log = logging.getLogger(__name__)

ABSENT_LOGIT = -4.0
# fewer rows than this: the regressions run in this process (starting workers would
# cost more than they save)
MIN_PARALLEL_ROWS = 5000


def tfidf_matrix(
    texts: list[str], model: CarelensModel
) -> tuple[csr_matrix, SparseVocab, np.ndarray]:
    """(rows x n-grams TF-IDF matrix, vocabulary, idf with a 0 for the padding row):
    the vectorizers fitted on ``texts``; column ``j`` is the model's table row ``j + 1``."""
    cfg = model.config.sparse
    char_vec, word_vec = sparse_vectorizers(cfg)
    x = hstack([char_vec.fit_transform(texts), word_vec.fit_transform(texts)]).tocsr()
    idf = np.concatenate([[0.0], char_vec.idf_, word_vec.idf_])
    return x, SparseVocab.from_vectorizers(cfg, char_vec, word_vec), idf


@dataclass
class _Job:
    """One logistic regression: a task (one label of it for a multi-label task), fitted
    on the rows ``rows`` of the TF-IDF matrix with targets ``target``."""

    fit: int  # which fit it belongs to (a fold, or the whole path)
    name: str
    label: int | None
    rows: np.ndarray
    target: np.ndarray
    balance: dict[int, float] | None


def _jobs(
    fit: int,
    model: CarelensModel,
    index: np.ndarray,
    examples: list[Example],
    class_balance: float,
    label_balance: float,
) -> list[_Job]:
    """Every regression of one fit on ``examples`` (rows ``index`` of the matrix); a label
    or task the rows do not show in two classes gets none."""
    y = targets(examples, model.taxonomy)
    out = []
    for task in model.taxonomy:
        t = y[task.name].numpy()
        if task.kind == "multilabel":
            mask = (t >= 0).all(1)
            rows = y[task.name][torch.from_numpy(mask)]
            for j in range(task.num_labels):
                target = t[mask][:, j]
                if len(set(target.tolist())) < 2:
                    continue
                w = class_weights(task, rows[:, j : j + 1], label_balance)
                balance = None if w is None else {0: 1.0, 1: float(w[0])}
                out.append(_Job(fit, task.name, j, index[mask], target, balance))
            continue
        mask = t >= 0
        classes = sorted(set(t[mask].tolist()))
        if len(classes) < 2:
            continue
        w = class_weights(task, y[task.name][torch.from_numpy(mask)], class_balance)
        balance = None if w is None else {k: float(w[k]) for k in classes}
        out.append(_Job(fit, task.name, None, index[mask], t[mask], balance))
    return out


def _fit_one(
    key: int, x: csr_matrix, target: np.ndarray, c: float, balance: dict[int, float] | None
) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=1000, class_weight=balance).fit(x, target)
    return key, (lr.classes_, lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32))


def _run_jobs(
    x: csr_matrix, jobs: list[_Job], c: float, n_jobs: int | None, bar_desc: str | None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each job's (classes, coefficients, intercepts), in the order of ``jobs``. The
    regressions run in ``n_jobs`` processes (default: one per CPU core; scikit-learn's
    solver holds the GIL, so threads would not help), the largest first."""
    from joblib import Parallel, cpu_count, delayed

    n = n_jobs or cpu_count()
    if len(jobs) < 2 or x.shape[0] < MIN_PARALLEL_ROWS:
        n = 1
    order = sorted(range(len(jobs)), key=lambda k: -len(jobs[k].rows))
    # each process gets only its rows of the matrix
    tasks = (
        delayed(_fit_one)(k, x[jobs[k].rows], jobs[k].target, c, jobs[k].balance) for k in order
    )
    results: list[Any] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=bar_desc, disable=bar_desc is None, unit="fit")
    for k, result in Parallel(n_jobs=n, return_as="generator_unordered")(tasks):
        results[k] = result
        bar.update()
    bar.close()
    return results


def _assemble(
    model: CarelensModel,
    jobs: list[_Job],
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    columns: int,
    rows: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One fit's (weight: labels x table rows, column 0 the padding row's zeros; bias;
    summary) from its jobs' regressions."""
    clf = model.classifier
    weight = np.zeros((clf.sparse_table.weight.shape[1], columns + 1), dtype=np.float32)
    # a label the rows never show (or a task they do not label) gets a low constant
    # logit: unlikely on its own, still within reach of the encoder's head
    bias = np.full(weight.shape[0], ABSENT_LOGIT, dtype=np.float32)
    summary: dict[str, Any] = {"rows": rows, "tasks": {}}
    for job, (classes, coef, intercept) in zip(jobs, results, strict=True):
        lo, _ = clf.sparse_slices[job.name]
        if job.label is not None:  # one label of a multi-label task
            weight[lo + job.label, 1:] = coef[0]
            bias[lo + job.label] = intercept[0]
            entry = summary["tasks"].setdefault(
                job.name, {"rows": len(job.rows), "labels_fitted": 0}
            )
            entry["labels_fitted"] += 1
            continue
        if len(classes) == 2:  # one score: logits (0, z) give the same softmax
            bias[lo + int(classes[0])] = 0.0
            weight[lo + int(classes[1]), 1:] = coef[0]
            bias[lo + int(classes[1])] = intercept[0]
        else:
            for k, cls in enumerate(classes):
                weight[lo + int(cls), 1:] = coef[k]
                bias[lo + int(cls)] = intercept[k]
        summary["tasks"][job.name] = {"rows": len(job.rows), "classes": len(classes)}
    return weight, bias, summary


def _set_path(model: CarelensModel, weight: np.ndarray, bias: np.ndarray, idf: np.ndarray) -> None:
    clf = model.classifier
    with torch.no_grad():
        clf.sparse_table.weight.copy_(torch.from_numpy(weight.T.copy()))
        clf.sparse_bias.copy_(torch.from_numpy(bias))
        clf.sparse_idf.copy_(torch.from_numpy(idf.astype(np.float32)))


def fit_sparse(
    model: CarelensModel,
    examples: list[Example],
    c: float = 4.0,
    progress: bool = True,
    class_balance: float = 0.0,
    label_balance: float = 0.0,
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """Fit the sparse path on ``examples`` (in place); returns a summary.

    ``class_balance`` (single-label tasks) and ``label_balance`` (multi-label tasks)
    weigh the classes as the fine-tuning loss does (``model.classifier.class_weights``);
    ``n_jobs`` processes fit the regressions (default: one per CPU core)."""
    if model.classifier.sparse_table is None:
        raise ValueError("this model has no sparse path (model config: sparse.enabled = false)")
    t0 = time.perf_counter()
    x, vocab, idf = tfidf_matrix([e.text for e in examples], model)
    model.classifier.set_sparse_vocab(vocab)
    desc = "sparse path (logistic regression)" if progress else None
    jobs = _jobs(0, model, np.arange(len(examples)), examples, class_balance, label_balance)
    results = _run_jobs(x, jobs, c, n_jobs, desc)
    weight, bias, summary = _assemble(model, jobs, results, x.shape[1], len(examples))
    _set_path(model, weight, bias, idf)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["ngrams"] = len(vocab) - 1
    log.info("sparse path fitted: %s", summary)
    return summary


def fit_sparse_crossed(
    model: CarelensModel,
    tuned: list[Example],
    rest: list[Example],
    folds: int,
    c: float = 4.0,
    progress: bool = True,
    class_balance: float = 0.0,
    label_balance: float = 0.0,
    seed: int = 0,
    n_jobs: int | None = None,
) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
    """Fit the sparse path on all rows (``tuned + rest``, in place, as ``fit_sparse``)
    and cross-fit it on the fine-tuning rows ``tuned``: they are dealt into ``folds``
    folds, and each fold's logits come from the regressions fitted on every other row
    (the other folds and ``rest``). Returns (summary, {id(example): its out-of-fold
    logits}) for every row of ``tuned``: the encoder fine-tunes against the path's
    logits on rows it never saw, as on a new message, while the path is the whole
    floor. The n-gram vocabulary and idf are those of all rows (no labels in them)."""
    if model.classifier.sparse_table is None:
        raise ValueError("this model has no sparse path (model config: sparse.enabled = false)")
    if folds < 2:
        raise ValueError(f"sparse_folds must be 2 or more to cross-fit, got {folds}")
    t0 = time.perf_counter()
    examples = tuned + rest
    x, vocab, idf = tfidf_matrix([e.text for e in examples], model)
    model.classifier.set_sparse_vocab(vocab)
    fold_of = np.arange(len(tuned)) % folds
    np.random.default_rng(seed).shuffle(fold_of)
    fold_of = np.concatenate([fold_of, np.full(len(rest), -1)])

    # the regressions of every fold and of the whole path, run together
    fits = [np.flatnonzero(fold_of != k) for k in range(folds)] + [np.arange(len(examples))]
    jobs = [
        job
        for f, keep in enumerate(fits)
        for job in _jobs(f, model, keep, [examples[i] for i in keep], class_balance, label_balance)
    ]
    desc = f"sparse path (logistic regression, {folds} folds and all rows)" if progress else None
    results = _run_jobs(x, jobs, c, n_jobs, desc)

    def fitted(f: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        mine = [k for k, job in enumerate(jobs) if job.fit == f]
        return _assemble(
            model, [jobs[k] for k in mine], [results[k] for k in mine], x.shape[1], len(fits[f])
        )

    offsets: dict[int, torch.Tensor] = {}
    for k in range(folds):
        weight, bias, _ = fitted(k)
        held = np.flatnonzero(fold_of == k)
        logits = x[held] @ weight[:, 1:].T + bias
        for i, row in zip(
            held, torch.from_numpy(np.asarray(logits, dtype=np.float32)), strict=True
        ):
            offsets[id(examples[i])] = row
    weight, bias, summary = fitted(folds)
    _set_path(model, weight, bias, idf)
    summary.update(folds=folds, seconds=round(time.perf_counter() - t0, 1), ngrams=len(vocab) - 1)
    log.info("sparse path fitted and cross-fitted: %s", summary)
    return summary, offsets

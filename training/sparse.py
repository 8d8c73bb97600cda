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


def _fit_regressions(
    model: CarelensModel,
    x: csr_matrix,
    examples: list[Example],
    c: float,
    class_balance: float,
    label_balance: float,
    bar_desc: str | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The logistic regressions of every task on the rows of ``x`` (``examples``):
    (weight: labels x table rows, column 0 the padding row's zeros; bias; summary)."""
    from sklearn.linear_model import LogisticRegression

    clf = model.classifier
    y = targets(examples, model.taxonomy)
    weight = np.zeros((clf.sparse_table.weight.shape[1], x.shape[1] + 1), dtype=np.float32)
    # a label the rows never show (or a task they do not label) gets a low constant
    # logit: unlikely on its own, still within reach of the encoder's head
    bias = np.full(weight.shape[0], ABSENT_LOGIT, dtype=np.float32)
    task_of = {task.name: task for task in model.taxonomy}
    jobs: list[tuple[str, int | None]] = []
    for task in model.taxonomy:
        if task.kind == "multilabel":
            jobs += [(task.name, j) for j in range(task.num_labels)]
        else:
            jobs.append((task.name, None))
    summary: dict[str, Any] = {"rows": len(examples), "tasks": {}}
    bar = tqdm(jobs, desc=bar_desc, disable=bar_desc is None, unit="fit")
    for name, j in bar:
        lo, _ = clf.sparse_slices[name]
        t = y[name].numpy()
        if j is not None:  # one label of a multi-label task
            mask = (t >= 0).all(1)
            target = t[mask][:, j]
            if len(set(target.tolist())) < 2:
                continue
            rows = y[name][torch.from_numpy(mask)]
            w = class_weights(task_of[name], rows[:, j : j + 1], label_balance)
            balance = None if w is None else {0: 1.0, 1: float(w[0])}
            lr = LogisticRegression(C=c, max_iter=1000, class_weight=balance)
            lr.fit(x[mask], target)
            weight[lo + j, 1:] = lr.coef_[0]
            bias[lo + j] = lr.intercept_[0]
            summary["tasks"].setdefault(name, {"rows": int(mask.sum()), "labels_fitted": 0})
            summary["tasks"][name]["labels_fitted"] += 1
            continue
        mask = t >= 0
        classes = sorted(set(t[mask].tolist()))
        if len(classes) < 2:
            continue
        w = class_weights(task_of[name], y[name][torch.from_numpy(mask)], class_balance)
        balance = None if w is None else {k: float(w[k]) for k in classes}
        lr = LogisticRegression(C=c, max_iter=1000, class_weight=balance).fit(x[mask], t[mask])
        if len(lr.classes_) == 2:  # one score: logits (0, z) give the same softmax
            bias[lo + int(lr.classes_[0])] = 0.0
            weight[lo + int(lr.classes_[1]), 1:] = lr.coef_[0]
            bias[lo + int(lr.classes_[1])] = lr.intercept_[0]
        else:
            for k, cls in enumerate(lr.classes_):
                weight[lo + int(cls), 1:] = lr.coef_[k]
                bias[lo + int(cls)] = lr.intercept_[k]
        summary["tasks"][name] = {"rows": int(mask.sum()), "classes": len(classes)}
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
) -> dict[str, Any]:
    """Fit the sparse path on ``examples`` (in place); returns a summary.

    ``class_balance`` (single-label tasks) and ``label_balance`` (multi-label tasks)
    weigh the classes as the fine-tuning loss does (``model.classifier.class_weights``)."""
    if model.classifier.sparse_table is None:
        raise ValueError("this model has no sparse path (model config: sparse.enabled = false)")
    t0 = time.perf_counter()
    x, vocab, idf = tfidf_matrix([e.text for e in examples], model)
    model.classifier.set_sparse_vocab(vocab)
    desc = "sparse path (logistic regression)" if progress else None
    weight, bias, summary = _fit_regressions(
        model, x, examples, c, class_balance, label_balance, desc
    )
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

    def desc(k: int) -> str | None:
        return f"sparse path (logistic regression, {k} of {folds + 1})" if progress else None

    offsets: dict[int, torch.Tensor] = {}
    for k in range(folds):
        keep, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        weight, bias, _ = _fit_regressions(
            model,
            x[keep],
            [examples[i] for i in keep],
            c,
            class_balance,
            label_balance,
            desc(k + 1),
        )
        logits = x[held] @ weight[:, 1:].T + bias
        for i, row in zip(
            held, torch.from_numpy(np.asarray(logits, dtype=np.float32)), strict=True
        ):
            offsets[id(examples[i])] = row
    weight, bias, summary = _fit_regressions(
        model, x, examples, c, class_balance, label_balance, desc(folds + 1)
    )
    _set_path(model, weight, bias, idf)
    summary.update(folds=folds, seconds=round(time.perf_counter() - t0, 1), ngrams=len(vocab) - 1)
    log.info("sparse path fitted and cross-fitted: %s", summary)
    return summary, offsets

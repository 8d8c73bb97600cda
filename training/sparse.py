"""Fitting the sparse linear path (``model.classifier``'s TF-IDF n-gram map).

The model's own hashed featuriser (``model.ngrams``) turns the rows into a sparse
TF-IDF matrix (sublinear term frequency, smoothed idf, L2-normalised rows, as
scikit-learn's ``TfidfVectorizer`` does, for the character and the word n-grams
separately, like two vectorisers stacked side by side); one scikit-learn logistic regression per task
(multinomial for multiclass and ordinal tasks, one binary regression per label for
multi-label ones) is fitted on the rows labelled for that task, and its coefficients
are copied into the model. At prediction time the model computes exactly these
logistic regressions' logits in torch.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from tqdm.auto import tqdm

from model.ngrams import sparse_counts
from model.pretrained import CarelensModel
from training.data import Example, targets

log = logging.getLogger(__name__)

ABSENT_LOGIT = -4.0


def tfidf_matrix(
    texts: list[str], model: CarelensModel, idf: np.ndarray | None = None, progress: bool = False
) -> tuple[csr_matrix, np.ndarray]:
    """(rows x buckets TF-IDF matrix, idf). ``idf=None`` fits the idf on ``texts``."""
    cfg = model.config.sparse
    indptr, indices, tf = [0], [], []
    for text in tqdm(texts, desc="n-gram features", disable=not progress, unit="text"):
        counts = sparse_counts(text, cfg)
        indices.extend(counts.keys())
        tf.extend(counts.values())
        indptr.append(len(indices))
    ind = np.asarray(indices, dtype=np.int64)
    if idf is None:
        df = np.bincount(ind, minlength=cfg.buckets).astype(np.float64)
        idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        idf[df < cfg.min_df] = 0.0  # mostly n-grams of one text: memorised, never general
        idf[0] = 0.0
    data = (1.0 + np.log(np.asarray(tf, dtype=np.float64))) * idf[ind]
    row = np.repeat(np.arange(len(texts)), np.diff(np.asarray(indptr)))
    words = ind >= cfg.buckets // 2  # model.ngrams.sparse_block: each block has norm 1
    cell = row * 2 + words
    norms = np.sqrt(np.bincount(cell, weights=data**2, minlength=2 * len(texts)))
    norms[norms == 0] = 1.0
    data = data / norms[cell]
    x = csr_matrix((data, ind, np.asarray(indptr)), shape=(len(texts), cfg.buckets))
    return x, idf


def fit_sparse(
    model: CarelensModel, examples: list[Example], c: float = 4.0, progress: bool = True
) -> dict[str, Any]:
    """Fit the sparse path on ``examples`` (in place); returns a summary."""
    from sklearn.linear_model import LogisticRegression

    clf = model.classifier
    if clf.sparse_table is None:
        raise ValueError("this model has no sparse path (model config: sparse.enabled = false)")
    t0 = time.perf_counter()
    x, idf = tfidf_matrix([e.text for e in examples], model, progress=progress)
    y = targets(examples, model.taxonomy)
    weight = np.zeros((clf.sparse_table.weight.shape[1], x.shape[1]), dtype=np.float32)
    # a label the rows never show (or a task they do not label) gets a low constant
    # logit: unlikely on its own, still within reach of the encoder's head
    bias = np.full(weight.shape[0], ABSENT_LOGIT, dtype=np.float32)
    jobs: list[tuple[str, int | None]] = []
    for task in model.taxonomy:
        if task.kind == "multilabel":
            jobs += [(task.name, j) for j in range(task.num_labels)]
        else:
            jobs.append((task.name, None))
    summary: dict[str, Any] = {"rows": len(examples), "tasks": {}}
    bar = tqdm(jobs, desc="sparse path (logistic regression)", disable=not progress, unit="fit")
    for name, j in bar:
        lo, _ = clf.sparse_slices[name]
        t = y[name].numpy()
        if j is not None:  # one label of a multi-label task
            mask = (t >= 0).all(1)
            target = t[mask][:, j]
            if len(set(target.tolist())) < 2:
                continue
            lr = LogisticRegression(C=c, max_iter=1000).fit(x[mask], target)
            weight[lo + j] = lr.coef_[0]
            bias[lo + j] = lr.intercept_[0]
            summary["tasks"].setdefault(name, {"rows": int(mask.sum()), "labels_fitted": 0})
            summary["tasks"][name]["labels_fitted"] += 1
            continue
        mask = t >= 0
        classes = sorted(set(t[mask].tolist()))
        if len(classes) < 2:
            continue
        lr = LogisticRegression(C=c, max_iter=1000).fit(x[mask], t[mask])
        if len(lr.classes_) == 2:  # one score: logits (0, z) give the same softmax
            bias[lo + int(lr.classes_[0])] = 0.0
            weight[lo + int(lr.classes_[1])] = lr.coef_[0]
            bias[lo + int(lr.classes_[1])] = lr.intercept_[0]
        else:
            for k, cls in enumerate(lr.classes_):
                weight[lo + int(cls)] = lr.coef_[k]
                bias[lo + int(cls)] = lr.intercept_[k]
        summary["tasks"][name] = {"rows": int(mask.sum()), "classes": len(classes)}
    with torch.no_grad():
        clf.sparse_table.weight.copy_(torch.from_numpy(weight.T.copy()))
        clf.sparse_bias.copy_(torch.from_numpy(bias))
        clf.sparse_idf.copy_(torch.from_numpy(idf.astype(np.float32)))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["nonzero_buckets"] = int((np.abs(weight).sum(0) > 0).sum())
    log.info("sparse path fitted: %s", summary)
    return summary

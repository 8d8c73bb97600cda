"""``Predictor``: texts in, labels with probabilities, confidence and evidence out.

Batches are sorted by length and padded dynamically. Evidence: every text is cut
into sentence-like segments (with character offsets into the original text); each
segment is scored (by the model's sparse n-gram path alone when it has one, else by
the whole model), and for every predicted label the segment with the highest
probability for that label is reported as its evidence.

A review's star rating is an input: the model reads it as a short lead-in before the
text (``rated_text``, the same in training and prediction); evidence offsets stay
offsets into the caller's text. The critical rules (``model.rules``) are applied to
every prediction: a rule's labels replace the model's, its phrase is their evidence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.classifier import task_probs
from model.modeling import CarelensModel, ModelLoadError
from model.onnx_backend import BackendError, OnnxPooler, check_backend
from model.rules import RuleHit, RulesError, RuleSet
from model.taxonomy import Task

# sentence-like segments: up to and including terminal punctuation (en + zh) or a newline
_SEGMENT_RE = re.compile(r"[^.!?。！？;；\n]+(?:[.!?。！？;；]+|\n|$)")
MAX_SEGMENTS = 24
RATING_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def rated_text(text: str, rating: int | None) -> str:
    """What the model reads for a text with an optional 1-5 star rating."""
    if rating is None:
        return text
    return f"{RATING_WORDS[int(rating)]}-star review. {text}"


def validate_ratings(ratings: Any, n: int) -> list[int | None]:
    """``None`` (no ratings) or one rating per text: an integer 1-5 or ``None``."""
    if ratings is None:
        return [None] * n
    if isinstance(ratings, (str, bytes)) or not isinstance(ratings, Sequence):
        raise ValueError("ratings must be a list with one star rating (1-5 or None) per text")
    if len(ratings) != n:
        raise ValueError(
            f"got {len(ratings)} ratings for {n} texts: give one per text (None for none)"
        )
    out: list[int | None] = []
    for i, r in enumerate(ratings):
        if r is None:
            out.append(None)
            continue
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r != int(r) or not 1 <= r <= 5:
            raise ValueError(
                f"ratings[{i}] is {r!r}: a star rating is a whole number from 1 to 5, or None"
            )
        out.append(int(r))
    return out


@dataclass
class Evidence:
    label: str
    start: int
    end: int
    text: str
    score: float


@dataclass
class TaskPrediction:
    task: str
    kind: str
    labels: list[str]
    probabilities: dict[str, float]
    confidence: float
    needs_review: bool
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """The single label of a multiclass/ordinal task (first label otherwise)."""
        return self.labels[0] if self.labels else None


@dataclass
class Prediction:
    tasks: dict[str, TaskPrediction]
    truncated: bool = False
    model_version: str | None = None
    rule_hits: list[RuleHit] = field(default_factory=list)
    # the model's own labels, before the critical rules
    model_labels: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, task: str) -> TaskPrediction:
        return self.tasks[task]

    @property
    def needs_review(self) -> bool:
        return any(t.needs_review for t in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "truncated": self.truncated,
            "needs_review": self.needs_review,
            "tasks": {name: asdict(tp) for name, tp in self.tasks.items()},
            "rule_hits": [h.to_dict() for h in self.rule_hits],
        }

    @property
    def labels(self) -> dict[str, list[str]]:
        return {name: list(tp.labels) for name, tp in self.tasks.items()}


def clean_text(text: str) -> str:
    """Length-preserving clean-up so offsets stay valid: control and format
    characters become spaces, lone surrogates become U+FFFD."""
    out = []
    for ch in text:
        if ch in "\n\t\r":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cs":
            out.append("\ufffd")
        elif cat in ("Cc", "Cf") and ch != "\u200d":  # keep zero-width joiner (emoji sequences)
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def validate_texts(texts: Any) -> list[str]:
    """Return cleaned texts or raise ValueError naming the first bad item."""
    if isinstance(texts, (str, bytes)):
        raise ValueError("predict() takes a list of texts; wrap a single text in a list")
    if not isinstance(texts, Sequence):
        raise ValueError(f"predict() takes a list of texts, got {type(texts).__name__}")
    cleaned = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            raise ValueError(f"texts[{i}] is bytes; decode it to str (UTF-8) first")
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, expected str")
        c = clean_text(text)
        if not c.strip():
            raise ValueError(
                f"texts[{i}] is empty (only whitespace or control characters): nothing to classify"
            )
        cleaned.append(c)
    return cleaned


def segments(
    text: str, limit: int = MAX_SEGMENTS, max_chars: int | None = None
) -> list[tuple[int, int]]:
    """(start, end) offsets of sentence-like segments, stripped of surrounding space."""
    view = text if max_chars is None else text[:max_chars]
    spans = []
    for m in _SEGMENT_RE.finditer(view):
        start, end = m.start(), m.end()
        while start < end and view[start].isspace():
            start += 1
        while end > start and view[end - 1].isspace():
            end -= 1
        if end > start and any(ch.isalnum() for ch in view[start:end]):
            spans.append((start, end))
        if len(spans) >= limit:
            break
    if not spans:
        stripped_start = len(view) - len(view.lstrip())
        spans = [(stripped_start, len(view.rstrip()))]
    return spans


def apply_rules(rules: RuleSet, text: str, original: str, pred: Prediction, evidence: bool) -> None:
    """The critical rules applied to ``pred`` (a prediction of ``text``) in place: a task
    a rule sets takes the rule's labels with full confidence, and the matched phrase is
    the evidence of every label a rule gave; ``pred.model_labels`` keeps the model's.
    ``original`` is the caller's text (the same length as ``text``)."""
    pred.model_labels = pred.model_labels or pred.labels
    labels, hits = rules.apply(text, pred.labels)
    if not hits:
        return
    pred.rule_hits = hits
    by_name = {r.name: r for r in rules.rules}
    for name, tp in pred.tasks.items():
        fired = [h for h in hits if name in {**by_name[h.rule].set, **by_name[h.rule].add}]
        if not fired:
            continue
        ruled = any(name in by_name[h.rule].set for h in fired)
        new = [label for label in labels[name] if label not in tp.labels]
        tp.labels = labels[name]
        if ruled:  # the rule decides this task: certain, its phrase the evidence
            tp.confidence, tp.needs_review, tp.evidence = 1.0, False, []
        if evidence:
            hit = fired[0]
            for label in tp.labels if ruled else new:
                tp.evidence.append(
                    Evidence(label, hit.start, hit.end, original[hit.start : hit.end], 1.0)
                )


class Predictor:
    """Load once, predict many. ``Predictor.load(dir)`` then ``predict(texts)``."""

    def __init__(
        self,
        model: CarelensModel,
        batch_size: int = 32,
        max_tokens: int | None = None,
        num_threads: int | None = None,
        evidence: bool = True,
        model_version: str | None = None,
        backend: str = "torch",
        rules: RuleSet | str | Path | None = None,
    ) -> None:
        """``rules``: a ``RuleSet``, a rules file, or None for ``data/rules.yaml``
        (``RuleSet(())`` for none)."""
        self.backend = check_backend(backend)
        if self.backend != "torch":
            # torch only runs the n-gram lookup and the heads here; a second OpenMP pool
            # would fight ONNX Runtime's threads for the cores (measured: -20% texts/s)
            torch.set_num_threads(1)
        elif num_threads:
            torch.set_num_threads(int(num_threads))
        self.model = model
        self.model.classifier.eval()
        self.batch_size = int(batch_size)
        self.max_tokens = int(max_tokens or model.config.max_length)
        self.evidence = evidence
        self.model_version = model_version or (model.path.name if model.path else None)
        self.rules = rules if isinstance(rules, RuleSet) else RuleSet.load(rules)
        self.rules.validate(model.taxonomy)

    @classmethod
    def load(cls, directory: str | Path, backend: str = "torch", **kwargs: Any) -> Predictor:
        """Load a model directory. ``backend``: ``torch`` (fp32), ``onnx`` (ONNX Runtime
        fp32) or ``onnx-int8`` (dynamic int8); the ONNX ones need ``carelens export``
        first. Any failure is a ``ModelLoadError`` that says what to fix."""
        try:
            check_backend(backend)
        except BackendError as exc:
            raise ModelLoadError(str(exc)) from exc
        model = CarelensModel.from_pretrained(directory)
        if backend != "torch":
            try:
                model.pooler = OnnxPooler(directory, backend, kwargs.get("num_threads"))
            except BackendError as exc:
                raise ModelLoadError(str(exc)) from exc
        try:
            return cls(model, backend=backend, **kwargs)
        except RulesError as exc:  # a bad rules file, or rules that do not fit the taxonomy
            raise ModelLoadError(str(exc)) from exc

    @property
    def taxonomy(self):
        return self.model.taxonomy

    # -- core -------------------------------------------------------------------------
    def _probs(
        self, texts: list[str], ratings: list[int | None] | None = None
    ) -> tuple[dict[str, np.ndarray], list[bool]]:
        """Calibrated probabilities per task, in input order, plus truncation flags."""
        if ratings is not None:
            texts = [rated_text(t, r) for t, r in zip(texts, ratings, strict=True)]
        if not texts:
            return {
                t.name: np.zeros((0, t.num_labels), dtype=np.float32) for t in self.taxonomy
            }, []
        logits, truncated = self.model.batched_logits(texts, self.batch_size, self.max_tokens)
        probs = {t.name: task_probs(t, logits[t.name]).float().numpy() for t in self.taxonomy}
        return probs, truncated

    def predict_proba(
        self,
        texts: list[str],
        ratings: list[int | None] | None = None,
        rules: bool = False,
    ) -> dict[str, np.ndarray]:
        """Calibrated probabilities per task: {task: array [n, num_labels]}: the model's
        own, or with ``rules`` the critical rules' decisions as certainties (a task a
        rule sets is one-hot on its labels, a label a rule adds has probability 1)."""
        cleaned = validate_texts(texts)
        probs, _ = self._probs(cleaned, validate_ratings(ratings, len(cleaned)))
        if rules:
            self.apply_rules_to_probs(cleaned, probs)
        return probs

    def apply_rules_to_probs(self, texts: list[str], probs: dict[str, np.ndarray]) -> None:
        """Overwrite ``probs`` (aligned with ``texts``) with the critical rules' decisions."""
        by_name = {r.name: r for r in self.rules.rules}
        for i, text in enumerate(texts):
            for hit in self.rules.hits(text):
                rule = by_name[hit.rule]
                for name, values in rule.set.items():
                    probs[name][i] = 0.0
                    for v in values:
                        probs[name][i, self.taxonomy[name].label2id[v]] = 1.0
                for name, values in rule.add.items():
                    for v in values:
                        probs[name][i, self.taxonomy[name].label2id[v]] = 1.0

    def predict(
        self,
        texts: list[str],
        evidence: bool | None = None,
        ratings: list[int | None] | None = None,
    ) -> list[Prediction]:
        """Labels for ``texts``; ``ratings``: one star rating (1-5 or None) per text."""
        cleaned = validate_texts(texts)
        stars = validate_ratings(ratings, len(cleaned))
        if not cleaned:
            return []
        probs, truncated = self._probs(cleaned, stars)
        want_evidence = self.evidence if evidence is None else evidence
        results = []
        for i in range(len(cleaned)):
            tasks = {task.name: self._decide(task, probs[task.name][i]) for task in self.taxonomy}
            results.append(
                Prediction(tasks=tasks, truncated=truncated[i], model_version=self.model_version)
            )
        if want_evidence:
            self._attach_evidence(cleaned, list(texts), results)
        for text, original, pred in zip(cleaned, texts, results, strict=True):
            apply_rules(self.rules, text, original, pred, want_evidence)
        return results

    def _decide(self, task: Task, p: np.ndarray) -> TaskPrediction:
        th = self.model.thresholds[task.name]
        probabilities = {
            name: round(float(v), 6) for name, v in zip(task.label_names, p, strict=True)
        }
        if task.kind == "multilabel":
            label_th = th.get("label_thresholds", {})
            chosen = [
                name
                for name, v in zip(task.label_names, p, strict=True)
                if v >= label_th.get(name, 0.5)
            ]
            chosen.sort(key=lambda name: -probabilities[name])
            # confidence of the set decision: the least certain per-label decision
            margins = [
                v if v >= label_th.get(name, 0.5) else 1.0 - v
                for name, v in zip(task.label_names, p, strict=True)
            ]
            confidence = float(min(margins))
        else:
            k = int(np.argmax(p))
            chosen = [task.label_names[k]]
            confidence = float(p[k])
        return TaskPrediction(
            task=task.name,
            kind=task.kind,
            labels=chosen,
            probabilities=probabilities,
            confidence=round(confidence, 6),
            needs_review=confidence < float(th.get("review_threshold", 0.5)),
        )

    @torch.inference_mode()
    def _segment_probs(self, seg_texts: list[str]) -> dict[str, np.ndarray]:
        """Probabilities of each segment: from the sparse n-gram path alone when the
        model has one (no encoder pass: under 1 ms for a review's sentences), from the
        whole model otherwise."""
        clf = self.model.classifier
        if clf.sparse_table is None:
            return self._probs(seg_texts)[0]
        parts: dict[str, list[np.ndarray]] = {t.name: [] for t in self.taxonomy}
        for start in range(0, len(seg_texts), 256):
            ids, tf = clf.sparse_inputs(seg_texts[start : start + 256])
            for name, p in clf.sparse_task_probs(ids, tf).items():
                parts[name].append(p.float().numpy())
        return {name: np.concatenate(v) for name, v in parts.items()}

    def _attach_evidence(
        self, texts: list[str], originals: list[str], results: list[Prediction]
    ) -> None:
        """``texts`` are the cleaned texts (same length as ``originals``, so offsets
        found in them index the originals too)."""
        max_chars = self.max_tokens * 16
        spans = [segments(t, max_chars=max_chars) for t in texts]
        seg_texts, owners = [], []
        for i, (text, sp) in enumerate(zip(texts, spans, strict=True)):
            if len(sp) > 1:
                for s, e in sp:
                    seg_texts.append(text[s:e])
                    owners.append((i, s, e))
        seg_probs = self._segment_probs(seg_texts) if seg_texts else {}
        by_text: dict[int, list[int]] = {}
        for j, (i, _, _) in enumerate(owners):
            by_text.setdefault(i, []).append(j)
        for i, pred in enumerate(results):
            for task in self.taxonomy:
                tp = pred.tasks[task.name]
                for label in tp.labels:
                    k = task.label2id[label]
                    if i in by_text:
                        rows = by_text[i]
                        scores = seg_probs[task.name][rows, k]
                        best = rows[int(np.argmax(scores))]
                        _, s, e = owners[best]
                        score = float(scores.max())
                    else:
                        s, e = spans[i][0]
                        score = tp.probabilities[label]
                    tp.evidence.append(
                        Evidence(
                            label=label,
                            start=s,
                            end=e,
                            text=originals[i][s:e],
                            score=round(score, 6),
                        )
                    )

"""``carelens bench autoreply``: how often the automatic-answer policy would answer the
labelled corpus's held-out messages, and how often with the wrong template.

Each corpus row of the split is classified by the model (critical rules applied),
routed by the routing file, and put to the policy (``serving.autoreply.decide``) at
each confidence bar, as a new message from a first-time customer that names its order
(the templates' other fields filled). Reviews stay reviews (never answered
automatically); every other source is a message. An answer is wrong when its
template's issue type is not among the row's annotated issue types.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from carelens.bench.page import percent

REVIEW_SOURCES = (
    "amazon_reviews",
    "chinese_online_shopping",
    "chinese_waimai",
    "chinese_chnsenticorp_htl",
)
DEFAULT_BARS = "0.5,0.7,0.8,0.9,0.95"


def measure(rows, predictions, policy, routing, templates, bars: list[float]) -> dict[str, Any]:
    from serving.autoreply import ISSUE_TASK, decide
    from serving.ingestion import routing_facts
    from training.data import example_rating

    received = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    values = {"order_id": "ORDER-ID", "customer_name": "Ann", "agent_name": policy.sign_as}
    out: dict[str, Any] = {"rows": len(rows), "bars": []}
    by_source = Counter(ex.meta.get("source", "?") for ex in rows)
    out["rows_per_source"] = dict(sorted(by_source.items()))
    out["messages"] = sum(n for src, n in by_source.items() if src not in REVIEW_SOURCES)
    for bar in bars:
        p = replace(policy, min_confidence=bar)
        counts: Counter[str] = Counter()
        per_source: dict[str, Counter[str]] = {}
        for ex, pred in zip(rows, predictions, strict=True):
            source = ex.meta.get("source", "?")
            channel = "review" if source in REVIEW_SOURCES else "email"
            labels = pred.labels
            hits = [h.to_dict() for h in pred.rule_hits]
            facts = routing_facts(pred, channel, example_rating(ex))
            queue = routing.decide(labels, facts, received).queue
            answer = decide(
                p,
                labels,
                pred[ISSUE_TASK].confidence,
                ex.meta.get("lang", "en"),
                channel,
                hits,
                queue,
                0,
                templates,
                values,
                can_send=True,
            )
            if answer.action == "off":
                continue
            gold = set(ex.labels.get(ISSUE_TASK) or [])
            wrong = templates[answer.template].issue_type not in gold
            for c in (counts, per_source.setdefault(source, Counter())):
                c[answer.action] += 1
                c[f"{answer.action}_wrong"] += wrong
        n = len(rows)
        out["bars"].append(
            {
                "min_confidence": bar,
                "sent": counts["send"],
                "sent_share": round(counts["send"] / n, 4) if n else None,
                "sent_share_of_messages": round(counts["send"] / out["messages"], 4)
                if out["messages"]
                else None,
                "sent_wrong": counts["send_wrong"],
                "sent_wrong_share": round(counts["send_wrong"] / counts["send"], 4)
                if counts["send"]
                else None,
                "drafted": counts["draft"],
                "drafted_share": round(counts["draft"] / n, 4) if n else None,
                "drafted_wrong": counts["draft_wrong"],
                "drafted_wrong_share": round(counts["draft_wrong"] / counts["draft"], 4)
                if counts["draft"]
                else None,
                "per_source": {s: dict(c) for s, c in sorted(per_source.items())},
            }
        )
    return out


def bench_autoreply(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    splits: Annotated[
        str,
        typer.Option("--splits", help="Corpus splits, comma-separated (dev tunes, test reports)."),
    ] = "dev,test",
    bars: Annotated[
        str, typer.Option(help="Confidence bars to measure, comma-separated.")
    ] = DEFAULT_BARS,
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Default: data/autoreply.yaml.")
    ] = None,
    corpus: Annotated[Path | None, typer.Option(help="Default: data/labels/corpus.csv.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="The public data (default $CARELENS_DATA).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
) -> None:
    """Share of held-out corpus messages the automatic-answer policy answers (sent or
    drafted) per confidence bar, and the share of those with the wrong template."""
    from rich.console import Console
    from rich.table import Table

    from model.predictor import Predictor
    from serving.autoreply import AutoReplyPolicy
    from serving.routing import RoutingConfig
    from serving.templates import load_file_templates
    from training.corpus import CORPUS_FILE, corpus_split, load_corpus
    from training.data import example_rating

    console = Console()
    predictor = Predictor.load(model)
    policy = AutoReplyPolicy.load(policy_file)
    routing = RoutingConfig.load()
    templates = load_file_templates()
    examples = load_corpus(corpus or CORPUS_FILE, predictor.taxonomy, data)
    wanted = [float(b) for b in bars.split(",") if b.strip()]
    result: dict[str, Any] = {
        "bench": "autoreply",
        "model": str(model),
        "model_version": predictor.model_version,
        "policy": str(policy_file or "data/autoreply.yaml"),
        "policy_min_confidence": policy.min_confidence,
        "cpu": platform.processor() or platform.machine(),
        "splits": {},
    }
    for split in [s.strip() for s in splits.split(",") if s.strip()]:
        rows = [ex for ex in examples if corpus_split(ex.text) == split]
        with console.status(f"classifying {len(rows)} {split} rows"):
            preds = predictor.predict(
                [ex.text for ex in rows], ratings=[example_rating(ex) for ex in rows]
            )
        figures = measure(rows, preds, policy, routing, templates, wanted)
        result["splits"][split] = figures
        table = Table(
            "bar",
            "sent",
            "of which wrong",
            "drafted",
            "of which wrong",
            title=f"{split}: {len(rows)} rows",
        )
        for b in figures["bars"]:
            table.add_row(
                f"{b['min_confidence']:.2f}",
                f"{b['sent']} ({percent(b['sent_share'])})",
                f"{b['sent_wrong']} ({percent(b['sent_wrong_share'])})",
                f"{b['drafted']} ({percent(b['drafted_share'])})",
                f"{b['drafted_wrong']} ({percent(b['drafted_wrong_share'])})",
            )
        console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")

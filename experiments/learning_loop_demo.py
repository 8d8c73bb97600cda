"""The learning loop on the real starter model, scripted.

Simulates agents correcting the starter model: the test rows (text hash: held out of
training and never calibrated on) of one public source are cut at random into an evaluation part (``--eval-rows``,
at most half) and an "inbox"; ``--n`` inbox rows the starter gets wrong become
labelled tickets (with the source's labels, labelled one minute apart, in the
``GET /v1/labels/export`` format). ``carelens retrain`` then runs with its default
settings on a fresh registry (the starter imported as v0001), and the script reports

- the retrain's own figures (frozen set, newest held-out tickets, gate decision, time);
- before/after on the evaluation part (rows never used as tickets, never trained on
  by either model; right and wrong ones as they come).

    python -m experiments.learning_loop_demo --source twitter_airline \
        --model var/models/starter --out var/reports/learning_loop_demo

Retraining calibrates on up to 50 dev rows per public source, never on these test rows.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from model.modeling import CarelensModel
from model.registry import Registry
from training.data import three_way_split
from training.retrain import score
from training.sources import load_source
from training.trainer import predict_probs


def wrong_rows(model: CarelensModel, rows, probs) -> list[int]:
    """Rows where the model's decision differs from the gold label on any labelled task."""
    out = []
    for i, ex in enumerate(rows):
        for task in model.taxonomy:
            gold = ex.labels.get(task.name)
            if gold is None:
                continue
            p = probs[task.name][i]
            if task.kind == "multilabel":
                th = model.thresholds[task.name].get("label_thresholds", {})
                pred = {n for n, v in zip(task.label_names, p, strict=True) if v >= th.get(n, 0.5)}
                wrong = pred != set(gold)
            else:
                wrong = not gold or task.label_names[int(np.argmax(p))] != gold[0]
            if wrong:
                out.append(i)
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="var/models/starter")
    ap.add_argument("--source", default="twitter_airline")
    ap.add_argument("--n", type=int, default=500, help="simulated agent corrections")
    ap.add_argument("--out", default="var/reports/learning_loop_demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-rows", type=int, default=1000, help="cap on the rows evaluated")
    ap.add_argument("--retrain-config", help="a retrain config YAML (default settings without)")
    args = ap.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    starter = CarelensModel.from_pretrained(args.model)
    tc = starter.train_config
    rows = load_source(args.source, starter.taxonomy, tc.get("data_dir"))
    # the source's test rows: the starter neither trained nor calibrated on them
    _, _, held = three_way_split(
        rows, float(tc.get("val_fraction", 0.1)), float(tc.get("dev_fraction", 0.5))
    )
    # two random parts: the agents' inbox (where corrections come from) and an
    # evaluation part that is never a ticket, with the starter's right and wrong rows
    # alike (scoring the rows left over after taking the wrong ones would score the
    # starter on rows it was right on by construction)
    rng = random.Random(args.seed)
    order_all = list(range(len(held)))
    rng.shuffle(order_all)
    n_eval = min(args.eval_rows or len(held) // 2, len(held) // 2)
    rest = [held[i] for i in sorted(order_all[:n_eval])]
    inbox = [held[i] for i in sorted(order_all[n_eval:])]
    probs = predict_probs(starter, inbox, calibrated=True)
    wrong = wrong_rows(starter, inbox, probs)
    rng.shuffle(wrong)
    tickets_idx = sorted(wrong[: args.n])
    if len(tickets_idx) < args.n:
        print(f"only {len(tickets_idx)} of {len(inbox)} inbox rows are wrong; using them all")
    held = inbox  # tickets are drawn from the inbox part
    print(
        f"{args.source}: {len(order_all)} held-out rows: {len(inbox)} inbox rows, starter wrong "
        f"on {len(wrong)}, {len(tickets_idx)} become tickets; {len(rest)} other rows for evaluation"
    )
    labels = out / "labels.jsonl"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    order = tickets_idx[:]
    rng.shuffle(order)
    with labels.open("w", encoding="utf-8") as fh:
        for k, i in enumerate(order):
            ex = held[i]
            rec = {
                "id": f"demo-{k}",
                "text": ex.text,
                "lang": ex.meta.get("lang"),
                "source": "tickets:social",
                "labelled_at": (start + timedelta(minutes=k)).isoformat(),
                "labelled_by": "simulated-agent",
            }
            for task, v in ex.labels.items():
                if v is not None:
                    rec[task] = v if starter.taxonomy[task].kind == "multilabel" else v[0]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    prep = time.perf_counter() - t0

    # the command an operator runs, default settings, timed from the outside
    reg = Registry(out / "registry")
    cmd = [
        sys.executable, "-m", "carelens.cli", "retrain", "--labels", str(labels),
        "--registry", str(reg.root), "--base", args.model, "--result", str(out / "result.json"),
        "--quiet",
    ]  # fmt: skip
    if args.retrain_config:
        cmd += ["--config", args.retrain_config]
    print("$", " ".join(cmd[2:]))
    t1 = time.perf_counter()
    subprocess.run(cmd, check=True)
    retrain_s = time.perf_counter() - t1
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))

    candidate = CarelensModel.from_pretrained(reg.path_of(result["version"]))
    before = score(starter, rest, per_source=False)
    after = score(candidate, rest, per_source=False)
    m = result["metrics"]
    report = {
        "source": args.source,
        "held_out_rows": len(order_all),
        "inbox_rows": len(inbox),
        "starter_wrong_in_inbox": len(wrong),
        "tickets": len(tickets_idx),
        "evaluated_rest": len(rest),
        "decision": result["decision"],
        "reason": result["reason"],
        "version": result["version"],
        "retrain_seconds": round(retrain_s, 1),
        "retrain_timings": result["timings"],
        "prepare_seconds": round(prep, 1),
        "source_rest": {"before": before, "after": after},
        "frozen": {"before": m["active"]["frozen"], "after": m["candidate"]["frozen"]},
        "new_tickets": {
            "before": m["active"]["new_tickets"],
            "after": m["candidate"]["new_tickets"],
        },
        "audit_flagged": len(result["audit"].get("flagged", [])),
        "data_summary": result["data_summary"],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(
        json.dumps(
            {k: v for k, v in report.items() if k not in ("data_summary", "frozen")}, indent=2
        )
    )
    print("frozen set mean:", m["active"]["frozen"]["mean"], "->", m["candidate"]["frozen"]["mean"])
    for src, cell in m["active"]["frozen"]["sources"].items():
        after_cell = m["candidate"]["frozen"]["sources"][src]
        print(
            f"  {src:28s}",
            " ".join(f"{t}={cell[t]:.3f}->{after_cell[t]:.3f}" for t in cell if t != "rows"),
        )


if __name__ == "__main__":
    main()

"""Training commands: ``carelens train``, ``carelens data ...`` and ``carelens retrain``."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)
data_app = typer.Typer(
    help="Public data sources and the labelled-data format.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


ProgressFile = Annotated[
    Path | None,
    typer.Option(
        "--progress-file",
        help="Keep {stage, fraction, message} here (JSON), updated as the build goes.",
    ),
]


def _progress_writer(path: Path | None):
    from model.registry import write_json_atomic

    def report(stage: str, fraction: float, message: str) -> None:
        if path is not None:
            write_json_atomic(
                path, {"stage": stage, "fraction": round(fraction, 3), "message": message}
            )

    return report


@app.command("train")
def train_cmd(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML training config (see docs/training.md).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    epochs: Annotated[
        int | None, typer.Option(min=0, help="Fine-tuning passes; 0: the sparse path alone.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Max tokens per text.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(min=1)] = None,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--fp32", help="Run the encoder in bfloat16 while fine-tuning (config: bf16)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Public data folder (default $CARELENS_DATA or ../shared/data)."),
    ] = None,
    progress_file: ProgressFile = None,
) -> None:
    """Fine-tune a model on the data listed in a config; calibrate it; save it."""
    from training.data import DataError
    from training.pipeline import run
    from training.sources import SourceError
    from training.trainer import TrainConfig

    flags = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_length": max_length,
        "seed": seed,
        "threads": threads,
        "bf16": bf16,
        "data_dir": str(data_dir) if data_dir else None,
    }
    if not config.is_file():
        raise _fail(f"config file not found: {config}")
    try:
        cfg = TrainConfig.from_file(config, flags)
        metrics = run(cfg, out, report=_progress_writer(progress_file))
    except (ValueError, DataError, SourceError) as exc:
        _progress_writer(progress_file)("failed", 1.0, str(exc))
        raise _fail(f"{config}: {exc}") from exc
    typer.echo(
        json.dumps(
            {
                "model": str(out),
                "validation_per_source": metrics["validation_per_source"],
                "train_seconds": metrics["train_seconds"],
            },
            indent=2,
        )
    )


STARTER_CONFIG = Path(__file__).resolve().parent.parent / "data" / "configs" / "starter.yaml"


@app.command("starter")
def starter(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write it (default: $CARELENS_MODEL_DIR or var/models/starter).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Public data folder (default $CARELENS_DATA or ../shared/data)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1)] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="The sparse n-gram path alone, no fine-tuning: a few minutes instead of "
            "about twenty-five on 2 idle cores, and weaker labels (what the service answers with "
            "while the starter builds).",
        ),
    ] = False,
    progress_file: ProgressFile = None,
) -> None:
    """Build the default model from the labelled corpus and the public sources
    (data/configs/starter.yaml)."""
    from model.paths import default_model_dir

    train_cmd(
        config=STARTER_CONFIG,
        out=out or default_model_dir(),
        epochs=0 if quick else None,
        batch_size=None,
        learning_rate=None,
        max_length=None,
        seed=None,
        threads=threads,
        data_dir=data_dir,
        progress_file=progress_file,
    )


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Report directory (metrics.json, report.md, PNGs).")
    ],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Labelled file(s) in the carelens format (held out)."),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            "-s",
            help="Public source(s): their test rows (the text-hash split the model's "
            "training config names: never trained or calibrated on). With --held-out: "
            "only these data entries of the model's training config.",
        ),
    ] = None,
    held_out: Annotated[
        bool,
        typer.Option(
            "--held-out",
            help="The test rows of every data entry of the model's own training config "
            "(train_config.json): the same text-hash split, never trained or calibrated on.",
        ),
    ] = False,
    split: Annotated[
        str,
        typer.Option(
            help="With --source/--held-out: 'test' rows (the figures to report) or 'dev' "
            "rows (those the model calibrated and set thresholds on: for choosing "
            "settings between builds, never for reporting quality).",
        ),
    ] = "test",
    baseline: Annotated[
        bool,
        typer.Option(help="Also fit and score the TF-IDF baseline on the model's training rows."),
    ] = True,
    data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
    backend: Annotated[
        str, typer.Option(help="torch, onnx or onnx-int8 (after `carelens export`).")
    ] = "torch",
    record: Annotated[
        bool,
        typer.Option(
            help="With --held-out alone (and the floor): write the test figures into the "
            "model directory's metrics.json and model card."
        ),
    ] = True,
    ratings: Annotated[
        bool,
        typer.Option(
            help="Read rated rows with their star rating (--no-ratings: as texts that come "
            "without one, e.g. e-mails)."
        ),
    ] = True,
    rules: Annotated[
        bool,
        typer.Option(
            help="Apply the critical rules, as every prediction does (--no-rules: the model "
            "alone, for the model's own safety_hazard recall)."
        ),
    ] = True,
    lang: Annotated[
        str,
        typer.Option(
            help="en or zh: the plots name tasks and labels by their English or Chinese "
            "display names (Chinese needs a CJK font, e.g. fonts-wqy-microhei)."
        ),
    ] = "en",
    probes: Annotated[
        Path | None,
        typer.Option(
            help="Also run a behaviour suite (data/probes/probes.jsonl): pass rate per "
            "capability, failures in the report folder's probes.json."
        ),
    ] = None,
) -> None:
    """Score a model per task and per source, with plots and the TF-IDF floor; with
    --probes, its behaviour suite too (--probes alone needs no labelled data)."""
    from datetime import UTC, datetime

    from model.modeling import ModelLoadError
    from model.predictor import Predictor
    from training.data import DataError, read_labelled, three_way_split
    from training.evaluate import comparison, evaluate
    from training.pipeline import build_sets, held_out_sets
    from training.sources import SourceError, load_source
    from training.trainer import TrainConfig

    if not data and not source and not held_out and probes is None:
        raise _fail("give --data FILE, --source NAME, --held-out and/or --probes FILE")
    if split not in ("test", "dev"):
        raise _fail(f"--split must be test or dev, not {split!r}")
    if lang not in ("en", "zh"):
        raise _fail(f"--lang must be en or zh, not {lang!r}")
    try:
        predictor = Predictor.load(model, backend=backend, evidence=False)
    except ModelLoadError as exc:
        raise _fail(str(exc)) from exc
    tax = predictor.taxonomy
    if probes is not None:
        from training.probes import load_probes, run_probes

        try:
            result = run_probes(predictor, load_probes(probes))
        except (ValueError, OSError) as exc:
            raise _fail(str(exc)) from exc
        out.mkdir(parents=True, exist_ok=True)
        (out / "probes.json").write_text(
            json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        for cap, r in result["per_capability"].items():
            typer.echo(f"probes {cap:20s} {r['passed']:4d}/{r['probes']:<4d} {r['pass_rate']:.3f}")
        typer.echo(
            f"probes {'all':20s} {result['passed']:4d}/{result['probes']:<4d} {result['pass_rate']:.3f}"
        )
        if not data and not source and not held_out:
            return
    tc = predictor.model.train_config
    val_fraction = float(tc.get("val_fraction", 0.1))
    dev_fraction = float(tc.get("dev_fraction", 0.5))
    examples = []
    try:
        for f in data or []:
            examples += read_labelled(f, tax, source=f.stem)
        for name in [] if held_out else source or []:
            rows = load_source(name, tax, str(data_dir) if data_dir else tc.get("data_dir"))
            # the test rows: neither trained nor calibrated on (or the dev rows)
            examples += three_way_split(rows, val_fraction, dev_fraction)[
                2 if split == "test" else 1
            ]
        cfg = None
        if tc.get("data"):
            cfg = TrainConfig.from_dict({**tc, **({"data_dir": str(data_dir)} if data_dir else {})})
        if held_out:
            if cfg is None:
                raise _fail(f"{model}: its training config lists no data, so nothing is held out")
            held = held_out_sets(cfg, tax, split)
            unknown = sorted(set(source or []) - set(held))
            if unknown:
                raise _fail(
                    f"--source {', '.join(unknown)}: not a data entry of {model}'s training "
                    f"config (its entries: {', '.join(held)})"
                )
            for name, rows in held.items():
                if not source or name in source:
                    examples += rows
        baseline_rows = None
        if baseline and cfg is not None:
            rows, _, rest = build_sets(cfg, tax)
            rows = rows + rest  # the model saw those too (n-gram pre-training)
            baseline_rows = list(
                {id(r): r for r in rows}.values()
            )  # weights repeat rows; the floor sees each once
    except (DataError, SourceError) as exc:
        raise _fail(str(exc)) from exc
    if not examples:
        raise _fail("no evaluation rows")
    report = evaluate(
        predictor,
        examples,
        out,
        baseline_train=baseline_rows,
        ratings=ratings,
        rules=rules,
        lang=lang,
    )
    for row in comparison(tax, report):
        b = "" if row["baseline"] is None else f"  baseline {row['baseline']:.3f}"
        if row["paired"] is not None:
            pr = row["paired"]
            b += f"  (+{pr['model_only']}/-{pr['floor_only']} rows, p={pr['p_value']:.2g})"
        typer.echo(
            f"{row['source']:28s} {row['task']:12s} n={row['n']:<6d} model {row['model']:.3f}{b}"
        )
    typer.echo(f"report: {out / 'report.md'}")
    if split == "dev":
        typer.echo("dev rows: the model calibrated on these; report the test rows' figures")
    elif (
        record
        and held_out
        and ratings
        and rules
        and not data
        and not source
        and baseline_rows is not None
    ):
        try:
            predictor.model.record_test_figures(
                {
                    "command": "carelens evaluate --held-out",
                    "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                    "backend": backend,
                    "rows": report["n"],
                    "cells": comparison(tax, report),
                }
            )
        except OSError as exc:  # e.g. a read-only model directory: the report stands
            typer.echo(f"test figures not recorded in {model}: {exc}", err=True)
        else:
            typer.echo(f"test figures recorded in {model / 'metrics.json'} and the model card")


@app.command("export")
def export_model_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    backend: Annotated[
        str,
        typer.Option(
            help="onnx (fp32 ONNX Runtime) or onnx-int8 (also writes the fp32 graph it comes from)."
        ),
    ] = "onnx-int8",
) -> None:
    """Export the encoder to ONNX inside the model directory (DIR/onnx/), then serve or
    predict with CARELENS_BACKEND / --backend onnx or onnx-int8."""
    from model.modeling import ModelLoadError
    from model.onnx_backend import BackendError
    from training.export import ExportError, export_onnx

    try:
        info = export_onnx(model, backend)
    except (ModelLoadError, BackendError, ExportError) as exc:
        raise _fail(str(exc)) from exc
    for name, f in info["files"].items():
        typer.echo(
            f"{name:10s} {model / 'onnx' / f['file']}  {f['bytes'] / 1e6:.1f} MB  "
            f"max |pooled - torch| {f['max_abs_diff_vs_torch']:.2e}"
        )


@data_app.command("sources")
def sources() -> None:
    """List the public sources with a mapping in data/mappings/."""
    from training.sources import SourceMapping, available_sources, data_dir

    try:
        root = data_dir()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    for name, path in available_sources().items():
        m = SourceMapping.load(path)
        present = (root / m.path).is_file()
        typer.echo(
            f"{name:28s} {m.lang:3s} tasks={','.join(m.tasks):30s} {'ok' if present else 'MISSING'} {root / m.path}"
        )


@data_app.command("export")
def export(
    source: Annotated[str, typer.Option(help="Source name (see `carelens data sources`).")],
    out: Annotated[Path, typer.Option(help="Output .jsonl in the labelled-data format.")],
    taxonomy: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Write one public source in the labelled-data format."""
    from model.taxonomy import Taxonomy
    from training.data import write_jsonl
    from training.sources import load_source

    tax = Taxonomy.load(taxonomy) if taxonomy else Taxonomy.default()
    try:
        rows = load_source(source, tax)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    write_jsonl(rows, out, tax)
    typer.echo(f"wrote {len(rows)} rows to {out}")


@data_app.command("weak-check")
def weak_check(
    data: Annotated[
        Path, typer.Argument(help="Hand-labelled file (labelled-data format with lang, sentiment).")
    ] = Path("data/labels/review_issue_types.csv"),
    rules: Annotated[str, typer.Option(help="Rule set in data/weak/ (or a path).")] = (
        "review_issue_types"
    ),
    task: Annotated[str, typer.Option(help="The task the rules label.")] = "issue_type",
    taxonomy: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Score weak-label rules against hand labels: precision/recall/F1 per label."""
    from model.taxonomy import Taxonomy
    from training.data import read_labelled
    from training.weak import WeakRules, score_rules

    tax = Taxonomy.load(taxonomy) if taxonomy else Taxonomy.default()
    try:
        weak = WeakRules.load(rules)
        weak.check(tax[task])
        rows = read_labelled(data, tax)
    except (ValueError, KeyError) as exc:
        raise _fail(str(exc)) from exc
    scored = [
        (ex.text, str(ex.meta.get("lang") or ""), (ex.labels.get("sentiment") or [None])[0], hand)
        for ex in rows
        if (hand := ex.labels.get(task)) is not None
    ]
    result = score_rules(weak, scored, tax[task].label_names)
    typer.echo(
        f"{result['rows']} rows, {result['unlabelled']} left unlabelled by the rules; "
        f"micro-F1 {result['micro_f1']:.3f}, exact match {result['exact_match']:.3f}"
    )
    typer.echo(f"{'label':20s} {'support':>7s} {'predicted':>9s} {'P':>6s} {'R':>6s} {'F1':>6s}")
    for name, s in result["per_label"].items():
        typer.echo(
            f"{name:20s} {s['support']:7d} {s['predicted']:9d} "
            f"{s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f}"
        )


@data_app.command("rule-hits")
def rule_hits(
    out: Annotated[Path, typer.Option(help="JSONL of the sampled hits, to be judged.")],
    per_rule: Annotated[int, typer.Option(min=1, help="Hits drawn per rule.")] = 40,
    rules: Annotated[
        Path | None, typer.Option(help="Rules file (default data/rules.yaml).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
) -> None:
    """Every critical-rule hit over the public data, counted per rule, and a seeded sample
    per rule written for people to judge (add "correct": true/false to each line, then
    `carelens data rule-precision FILE`)."""
    from model.rules import RulesError, RuleSet
    from training.rule_check import sample, scan, write_jsonl

    try:
        rs = RuleSet.load(rules)
        hits = scan(rs, data_dir)
    except (RulesError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    picked = sample(hits, per_rule)
    write_jsonl(picked, out)
    for name in rs.names:
        n = sum(h["rule"] == name for h in hits)
        typer.echo(f"{name:12s} {n:6d} hits, {sum(h['rule'] == name for h in picked):3d} sampled")
    typer.echo(f"wrote {len(picked)} hits to {out}")


@data_app.command("rule-precision")
def rule_precision(
    judged: Annotated[
        Path,
        typer.Argument(help="Judged hits: JSONL of {rule, source, id, correct} (no texts)."),
    ] = Path("data/labels/rule_hits_judged.jsonl"),
    rules: Annotated[
        Path | None, typer.Option(help="Rules file (default data/rules.yaml).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="Labelled corpus for the recall (default data/labels/corpus.csv)."),
    ] = None,
) -> None:
    """Precision per critical rule: of the judged hits that the current rules still make
    (each text read from its source by id), how many a person judged right; and recall
    on the labelled corpus: of its critical safety_hazard rows, how many the safety rule
    catches, and of all its critical rows, how many any rule catches: over the whole
    corpus and on its training, dev and test rows apart."""
    from model.rules import RulesError, RuleSet
    from model.taxonomy import Taxonomy
    from training.corpus import CORPUS_FILE, load_corpus
    from training.data import DataError
    from training.rule_check import judged_precision, recall, recall_by_split

    try:
        ruleset = RuleSet.load(rules)
        result = judged_precision(judged, ruleset, data_dir)
        rows = load_corpus(corpus or CORPUS_FILE, Taxonomy.default(), data_dir)
    except (RulesError, DataError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    for rule, p in result.items():
        typer.echo(
            f"{rule:12s} {p['correct']:3d}/{p['judged']:<3d} precision {p['precision']:.3f}"
            f"  ({p['no_longer_hit']} judged hits no longer made)"
        )
    parts = {"all": recall(ruleset, rows), **recall_by_split(ruleset, rows)}
    for part, result in parts.items():
        for name, r in result.items():
            what = (
                "critical safety_hazard rows, safety rule"
                if name == "safety"
                else ("critical rows, any rule")
            )
            typer.echo(
                f"recall ({part}) {r['caught']}/{r['rows']} {what}"
                + (f": {r['recall']:.3f}" if r["recall"] is not None else "")
            )


@data_app.command("draw")
def draw_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the annotation batches and key.json.")],
    data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
    supplement: Annotated[
        int,
        typer.Option(
            min=0,
            help="A targeted supplement round instead of the main draw: 1 (rows likely to "
            "raise a safety hazard, a wrong item, damage or a size problem), 2 (praise words "
            "in complaints, negated complaints, Chinese reviews that ask for action now or "
            "are lukewarm), 3 (complaint tweets, airline rebookings, refunds and bags, cons "
            "in good reviews, Chinese delivery, service, refund and mixed reviews), 4 (airline, "
            "X-CI and Chinese reviews at random, trigger words in good reviews), 5 (English "
            "reviews and tweets with a word of harm, tweets at random, Chinese reviews with a "
            "word of harm), 6 (lukewarm and plain Chinese reviews, for the neutral class), 7 "
            "(the X-CI tweets left and negative and neutral airline tweets, for English issue "
            "types), 8 and 9 (Chinese reviews at random, negative ones over-sampled); "
            "batches numbered after the earlier draws' and key_supplement*.json.",
        ),
    ] = 0,
) -> None:
    """Draw the corpus's texts from the public data (seeded, documented in
    data/labels/README.md) and write them as annotation batches: id, text and star
    rating only (no source, no source label)."""
    from collections import Counter

    from training.corpus import (
        SUPPLEMENTS,
        draw,
        draw_supplement,
        supplement_first_batch,
        write_batches,
    )

    try:
        rows = draw_supplement(data_dir, supplement) if supplement else draw(data_dir)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if supplement:
        _, groups, key_name = SUPPLEMENTS[supplement - 1]
        key = write_batches(rows, out, groups, supplement_first_batch(supplement), key_name)
    else:
        key = write_batches(rows, out)
    for source, n in sorted(Counter(r.source for r in rows).items()):
        typer.echo(f"{source:28s} {n:5d}")
    typer.echo(f"wrote {len(key)} texts in {len(list(out.glob('batch*.jsonl')))} batches to {out}")


@data_app.command("corpus")
def corpus_cmd(
    annotation: Annotated[
        Path, typer.Option(help="Folder with key.json, passA/, passB/, adjudicated/.")
    ] = Path("data/labels/annotation"),
    out: Annotated[Path, typer.Option(help="The corpus file to write.")] = Path(
        "data/labels/corpus.csv"
    ),
    stats: Annotated[
        Path | None, typer.Option(help="Also write the figures (agreement, counts) as JSON.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
    partial: Annotated[
        bool, typer.Option(help="Leave out disputed rows not yet adjudicated (else an error).")
    ] = False,
) -> None:
    """Make the labelled corpus from the two annotation passes and the adjudications:
    agreed labels, the adjudicator's where the passes differ; print the agreement per
    source and language (Cohen's kappa for sentiment, linearly weighted kappa for
    urgency, mean Jaccard of the issue-type sets)."""
    from model.taxonomy import Taxonomy
    from training.corpus import build_corpus, write_corpus

    try:
        rows, figures = build_corpus(Taxonomy.default(), annotation, data_dir, partial)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    write_corpus(rows, out)
    typer.echo(
        f"{'group':26s} {'rows':>5s} {'sent κ':>7s} {'urg κw':>7s} {'issue J':>8s} {'issue =':>8s}"
    )
    for group, a in figures["agreement"].items():
        typer.echo(
            f"{group:26s} {a['rows']:5d} {a['sentiment']['kappa']:7.3f} "
            f"{a['urgency']['kappa']:7.3f} {a['issue_type']['mean_jaccard']:8.3f} "
            f"{a['issue_type']['agreement']:8.3f}"
        )
    typer.echo(f"splits: {figures['splits']}; wrote {figures['rows']} rows to {out}")
    if figures["awaiting_adjudication"]:
        typer.echo(
            f"left out: {figures['awaiting_adjudication']} disputed rows not yet adjudicated"
        )
    if stats is not None:
        stats.write_text(json.dumps(figures, indent=2, ensure_ascii=False), encoding="utf-8")


# -- retraining ------------------------------------------------------------------------
# (database_url or None, taxonomy file, out path) -> rows written
LabelsExporter = Callable[[str | None, Path, Path], int]


def retrain_command(export_labels: LabelsExporter | None):
    """``carelens retrain``: labelled tickets -> audited fine-tuning -> gated promotion.
    Without ``--labels`` the tickets come from ``export_labels`` (the service's store;
    the thin ``carelens/cli.py`` passes it, so training never imports serving)."""

    def retrain_cmd(
        labels: Annotated[
            Path | None,
            typer.Option(
                "--labels",
                "-l",
                help="Labelled tickets (the GET /v1/labels/export format). Default: export them "
                "from the service's store (--database-url).",
            ),
        ] = None,
        database_url: Annotated[
            str | None,
            typer.Option(
                help="Store to export from (default $CARELENS_DATABASE_URL or the SQLite file)."
            ),
        ] = None,
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="YAML of RetrainConfig fields.")
        ] = None,
        registry: Annotated[
            Path | None,
            typer.Option(
                help="Registry folder (default $CARELENS_REGISTRY or $CARELENS_HOME/registry)."
            ),
        ] = None,
        base: Annotated[
            Path | None,
            typer.Option(
                help="Model imported as v0001 when the registry is empty (default: the starter)."
            ),
        ] = None,
        promote: Annotated[
            bool | None,
            typer.Option("--promote/--no-promote", help="Promote when the gate passes."),
        ] = None,
        exclude_flagged: Annotated[
            bool | None,
            typer.Option("--exclude-flagged/--keep-flagged", help="Mask labels cleanlab flags."),
        ] = None,
        from_backbone: Annotated[
            bool | None,
            typer.Option("--from-backbone", help="Start from the backbone, not the active model."),
        ] = None,
        epochs: Annotated[int | None, typer.Option(min=1)] = None,
        threads: Annotated[int | None, typer.Option(min=1)] = None,
        data_dir: Annotated[Path | None, typer.Option(help="Public data folder.")] = None,
        result: Annotated[
            Path | None, typer.Option(help="Also write the result record (JSON) here.")
        ] = None,
        progress_file: ProgressFile = None,
        quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    ) -> None:
        """Retrain on the agents' labelled tickets; audit the labels with cleanlab; evaluate
        candidate and active model on the frozen set and the newest tickets; promote only
        if the gate passes. The candidate is kept as a registry version either way."""
        from model.modeling import ModelLoadError
        from model.registry import Registry, RegistryError, write_json_atomic
        from training.retrain import RetrainConfig, RetrainError, retrain

        if config is not None and not config.is_file():
            raise _fail(f"config file not found: {config}")
        flags = {
            "promote": promote,
            "exclude_flagged": exclude_flagged,
            "from_backbone": from_backbone,
            "epochs": epochs,
            "threads": threads,
            "data_dir": str(data_dir) if data_dir else None,
        }
        try:
            cfg = RetrainConfig.from_file(config, flags)
        except (TypeError, ValueError) as exc:
            raise _fail(f"{config or 'retrain config'}: {exc}") from exc
        reg = Registry(registry)
        report = _progress_writer(progress_file)

        with tempfile.TemporaryDirectory() as tmp:
            if labels is None:
                if export_labels is None:
                    raise _fail("give --labels FILE (no store exporter is registered)")
                from model.paths import default_model_dir

                active = reg.active_path() or (base or default_model_dir())
                labels = Path(tmp) / "labels.jsonl"
                try:
                    n = export_labels(database_url, Path(active) / "taxonomy.yaml", labels)
                except Exception as exc:
                    raise _fail(f"exporting labelled tickets from the store: {exc}") from exc
                typer.echo(f"exported {n} labelled tickets from the store", err=True)
            try:
                out = retrain(
                    labels, reg, cfg, base_model_dir=base, progress=report, show_bars=not quiet
                )
            except (RetrainError, RegistryError, ModelLoadError) as exc:
                report("failed", 1.0, str(exc))
                raise _fail(str(exc)) from exc
        if result is not None:
            write_json_atomic(result, out)
        m = out["metrics"]
        summary = {
            "version": out["version"],
            "parent": out["parent"],
            "decision": out["decision"],
            "reason": out["reason"],
            "active": out["active"],
            "frozen_mean": {k: m[k]["frozen"]["mean"] for k in ("active", "candidate")},
            "new_tickets_mean": {k: m[k]["new_tickets"]["mean"] for k in ("active", "candidate")},
            "flagged_labels": len(out["audit"].get("flagged", [])),
            "seconds": out["timings"]["total"],
        }
        typer.echo(json.dumps(summary, indent=2))

    return retrain_cmd

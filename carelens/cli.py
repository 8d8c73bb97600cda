"""The one thin place that registers every package's commands.

``model``, ``training`` and ``serving`` each keep their own typer app; this module
only mounts them, so the packages never import each other. The benchmarks
(``carelens.bench``), which drive all three, live beside it.
"""

from __future__ import annotations

import typer

from carelens.bench import app as bench_app
from model.cli import app as model_app
from serving.cli import app as serving_app
from training.cli import app as training_app
from training.cli import retrain_command

app = typer.Typer(
    name="carelens",
    help="Triage customer messages: issue type, sentiment and urgency, in English and Chinese.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(model_app)
app.add_typer(training_app)
app.add_typer(serving_app)

app.add_typer(bench_app, name="bench")


def _export_labels(database_url, taxonomy_file, out) -> int:
    """`carelens retrain` without --labels: the store's labelled tickets (serving)."""
    from serving.corrections import export_labels_file

    return export_labels_file(database_url, taxonomy_file, out)


app.command("retrain")(retrain_command(export_labels=_export_labels))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

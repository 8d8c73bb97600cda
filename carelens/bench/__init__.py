"""``carelens bench ...``: figures measured in one run against a baseline.

Each module holds one benchmark and its command: ``predict`` (backends against a plain
transformers baseline), ``api`` (the service under load, the queue's claim), ``console``
(the console's pages and the API's lists over a large store), ``autoreply`` (how many
tickets the automatic answers would take), ``first_answer`` (a fresh clone to its first
labels) and ``page`` (the figures page written from their JSON).
"""

from __future__ import annotations

import typer

from carelens.bench.api import bench_api
from carelens.bench.autoreply import bench_autoreply
from carelens.bench.console import bench_console_cmd
from carelens.bench.first_answer import bench_first_answer
from carelens.bench.page import bench_page
from carelens.bench.predict import bench_predict

app = typer.Typer(
    help="Benchmarks: figures measured in one run against a baseline.", no_args_is_help=True
)
app.command("predict")(bench_predict)
app.command("api")(bench_api)
app.command("first-answer")(bench_first_answer)
app.command("autoreply")(bench_autoreply)
app.command("console")(bench_console_cmd)
app.command("page")(bench_page)

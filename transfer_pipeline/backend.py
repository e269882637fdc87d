"""Choose the Keras backend (``compute.backend``) before Keras is first imported.

Keras reads ``KERAS_BACKEND`` once, at its first import; every stage that builds or runs a
model calls ``select()`` right after reading its params. Kept free of Keras imports.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from .errors import PipelineError

BACKENDS = ("tensorflow", "jax")
INSTALL = {"tensorflow": "pip install -e .", "jax": 'pip install -e ".[jax]"'}


def select(name: str) -> str:
    """Make ``name`` the backend of this process; one line if it is not installed."""
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise PipelineError(
                f"Keras was already imported with the {current} backend; compute.backend = "
                f"{name} must be set before Keras is imported"
            )
    try:
        installed = importlib.util.find_spec(name) is not None
    except ImportError:
        installed = False
    if not installed:
        raise PipelineError(
            f"compute.backend = {name} but {name} is not installed; run `{INSTALL[name]}` "
            "or choose another compute.backend"
        )
    os.environ["KERAS_BACKEND"] = name
    return name

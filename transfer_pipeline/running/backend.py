"""Choose the Keras backend (``compute.backend``) before Keras is first imported.

Keras reads ``KERAS_BACKEND`` once, at its first import; every stage that builds or runs a
model calls ``select()`` right after reading its params. Kept free of Keras imports.

``select()`` also starts the stage without two optional integrations that Keras and
TensorFlow import whenever the package is installed, and that no stage uses: Keras' scikit-learn
wrappers (``keras.wrappers`` imports scikit-learn) and, on TensorFlow, TensorFlow Lite's
converter for jax functions (``tensorflow.lite.python.util`` imports jax). Both import them
inside ``try/except ImportError``; a stage that uses one says so (``needs``). About 3 s of CPU
less per TensorFlow stage start on a 2-core Xeon (``bench/startup.py``, BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ..plumbing.errors import PipelineError

BACKENDS = ("tensorflow", "jax")
INSTALL = {"tensorflow": "pip install -e .", "jax": 'pip install -e ".[jax]"'}
# What Keras (and TensorFlow) import at start-up for integrations no stage uses, by backend.
UNUSED_BY_STAGES = {"tensorflow": {"sklearn", "jax"}, "jax": {"sklearn"}}


def select(name: str, needs: tuple[str, ...] = ()) -> str:
    """Make ``name`` the backend of this stage process; one line if it is not installed.
    ``needs``: the optional modules (``UNUSED_BY_STAGES``) this stage imports itself."""
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
    for module in UNUSED_BY_STAGES[name] - set(needs):
        sys.modules.setdefault(module, None)  # `import` raises ImportError; imported: kept
    return name

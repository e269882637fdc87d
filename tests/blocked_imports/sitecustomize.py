"""Put this folder on PYTHONPATH and name packages in BLOCKED_IMPORTS (comma-separated) to
make importing them fail in that process and its children: how the tests prove that the jax
path never needs TensorFlow, and what a stage says when a backend is not installed."""

import os
import sys

BLOCKED = {name for name in os.environ.get("BLOCKED_IMPORTS", "").split(",") if name}


class _BlockImports:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test (BLOCKED_IMPORTS)")
        return None


sys.meta_path.insert(0, _BlockImports())

"""Put this folder on PYTHONPATH and name packages in BLOCKED_IMPORTS (comma-separated) to
make importing them fail in that process and its children: how the tests prove that the jax
path never needs TensorFlow, and what a stage says when a backend is not installed.

With RECORD_CALLBACK_DISPATCH=<file>, every Keras CallbackList of those processes also appends
one JSON line to <file>: the script, its callbacks, and whether Keras' own
`_configure_async_dispatch` lets train, test and predict steps run without waiting for them.

With BLOCKED_NETWORK=1, every connection that leaves the machine is refused (no_network.py).
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys
from pathlib import Path

BLOCKED = {name for name in os.environ.get("BLOCKED_IMPORTS", "").split(",") if name}
DISPATCH_RECORD = os.environ.get("RECORD_CALLBACK_DISPATCH")


class _BlockImports:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            # as a package that is not installed fails (KerasHub tells one from a broken
            # kagglehub by the error's name)
            raise ModuleNotFoundError(
                f"{name} is blocked in this test (BLOCKED_IMPORTS)", name=name
            )
        return None


class _RecordCallbackDispatch(importlib.abc.MetaPathFinder):
    """Wraps CallbackList._configure_async_dispatch once Keras' module is loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras.src.callbacks.callback_list":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.CallbackList._configure_async_dispatch = _recorded(
                module.CallbackList._configure_async_dispatch
            )

        spec.loader.exec_module = exec_module
        return spec


def _recorded(configure):
    def configure_and_record(callback_list, callbacks):
        configure(callback_list, callbacks)
        record = {
            "script": Path(sys.argv[0]).stem,
            "callbacks": [type(callback).__name__ for callback in callbacks or []],
            "train": callback_list._async_train,
            "test": callback_list._async_test,
            "predict": callback_list._async_predict,
        }
        with open(DISPATCH_RECORD, "a") as out:
            out.write(json.dumps(record) + "\n")

    return configure_and_record


sys.meta_path.insert(0, _BlockImports())
if os.environ.get("BLOCKED_NETWORK") == "1":
    from no_network import refuse_connections

    refuse_connections()
if DISPATCH_RECORD:
    sys.meta_path.insert(1, _RecordCallbackDispatch())

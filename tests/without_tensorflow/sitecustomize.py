"""Put this folder on PYTHONPATH to make `import tensorflow` fail in that process (and its
children): the test that the jax backend never needs TensorFlow."""

import sys


class _BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name} is blocked in this test (the jax path must not need it)")
        return None


sys.meta_path.insert(0, _BlockTensorFlow())

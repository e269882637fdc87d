"""Shared code of the transfer-learning pipeline: params, data, models, training, report.

The stage scripts in ``stages/`` are thin: they read params, call into this package
and write their outputs atomically.
"""

import os

# Before TensorFlow is first imported anywhere: keep its C++ start-up chatter out of logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

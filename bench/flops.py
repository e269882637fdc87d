"""FLOPs of one forward pass from the backend's own cost analysis (shared by the benchmarks)."""

from __future__ import annotations

import keras


def flops_per_image(model: keras.Model, shape) -> float:
    """Float operations of one forward pass (multiply and add counted separately), from the
    backend's own cost analysis: TensorFlow's profiler, or XLA's on jax."""
    if keras.backend.backend() == "jax":
        import jax

        def forward(trainable, frozen, x):
            return model.stateless_call(trainable, frozen, x, training=False)[0]

        lowered = jax.jit(forward).lower(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            jax.ShapeDtypeStruct((1, *shape), "float32"),
        )
        cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)

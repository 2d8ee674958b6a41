"""Networks and their training: architectures, losses, tf.data pipelines, the runner, the bundle."""

"""Training under a ``tf.distribute`` strategy: one machine's GPUs, or the workers of a cluster.

:func:`bcp_core.model.training.train_model` is the only trainer. A :class:`Distribution` tells
it how this process takes part in a run:

* ``none``: one process, Keras ``model.fit`` (the default).
* ``mirrored``: one process, every local GPU, Keras ``model.fit`` under
  ``tf.distribute.MirroredStrategy`` (the path Keras 3 documents): the pipeline delivers global
  batches and Keras splits them over the GPUs.
* ``multiworker``: one process per worker (started by :mod:`bcp_core.model.ray_train` through Ray
  Train, which sets ``TF_CONFIG``), ``tf.distribute.MultiWorkerMirroredStrategy``. Keras 3's
  ``model.fit`` fails under that strategy, so :func:`fit_custom` runs the epochs: the same
  callbacks, the same loss with the same class weights, the same optimiser, one
  ``strategy.run`` step per global batch.

Batches and learning rate: ``batch_size`` is the global batch in every mode. Each of N
workers shuffles the list of training paths exactly as one process would (same seed), keeps
every N-th path (``Dataset.shard``, before any image is decoded, so each decodes only its own
share) and batches ``batch_size / N`` of them: at every step the workers' batches together
hold the images of one process's batch, and an epoch is as many global steps as in one
process. Because the global batch is unchanged, so is the learning rate. What still differs
from one process: the random draws of augmentation and dropout, and BatchNorm statistics,
which each worker takes over its own part of the batch. To train faster on more workers,
raise the batch size and the learning rate together (linear scaling) as a choice of your own.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from bcp_core.config import DISTRIBUTE_MODES
from bcp_core.errors import UserError


@dataclass(frozen=True)
class Distribution:
    """How this process takes part in a training run.

    Attributes:
        mode: one of ``config.DISTRIBUTE_MODES``.
        strategy: the ``tf.distribute`` strategy (None for ``none``).
        worker: this process's index among the workers (0 is the chief).
        workers: processes taking part (1 except for ``multiworker``).
    """

    mode: str = "none"
    strategy: Any = None
    worker: int = 0
    workers: int = 1

    @property
    def is_chief(self) -> bool:
        """The chief writes the bundle and reports progress; the others only train."""
        return self.worker == 0

    @property
    def custom_loop(self) -> bool:
        """True where Keras' ``model.fit`` cannot run and :func:`fit_custom` does."""
        return self.mode == "multiworker"

    def scope(self):
        """The strategy's scope (variables created in it are mirrored), else a no-op."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def worker_batch(self, global_batch: int) -> int:
        """This worker's share of a global batch.

        Raises:
            UserError: when the batch does not divide evenly between the workers.
        """
        if global_batch % self.workers:
            raise UserError(
                f"A batch of {global_batch} images does not divide between {self.workers} "
                f"workers; choose a batch size that is a multiple of {self.workers}."
            )
        return global_batch // self.workers


def local_distribution(mode: str) -> Distribution:
    """The :class:`Distribution` of a run in this process: ``none`` or ``mirrored``.

    ``mirrored`` mirrors over every local GPU (on a machine without one, over the CPU: it runs,
    but gains nothing). ``multiworker`` runs through :func:`bcp_core.model.ray_train.train_on_ray`.

    Raises:
        UserError: for another mode.
    """
    if mode == "none":
        return Distribution()
    if mode == "mirrored":
        return Distribution("mirrored", tf.distribute.MirroredStrategy())
    if mode == "multiworker":
        raise UserError("Multi-worker training runs on a Ray cluster: use train_on_ray.")
    raise UserError(f"Unknown distribution {mode!r}; choose one of: {', '.join(DISTRIBUTE_MODES)}.")


def multiworker_distribution(worker: int, workers: int) -> Distribution:
    """This worker's :class:`Distribution` under ``MultiWorkerMirroredStrategy``.

    ``TF_CONFIG`` (set by Ray Train) names the cluster; the strategy must be made before any
    other TensorFlow operation of the process.
    """
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return Distribution("multiworker", strategy, worker, workers)


def fit_custom(
    model: keras.Model,
    make_dataset,
    *,
    distribution: Distribution,
    epochs: int,
    steps: int,
    class_weight: dict[int, float] | None,
    callbacks: list[keras.callbacks.Callback],
    initial_epoch: int = 0,
) -> int:
    """Train like ``model.fit`` where it cannot run: a custom loop under the strategy.

    Args:
        model: built and compiled inside ``distribution.scope()`` (its loss and optimiser
            are the compiled ones).
        make_dataset: ``f(input_context) -> tf.data.Dataset`` of this worker's ``(images,
            labels)`` batches, repeating (``distribute_datasets_from_function``).
        distribution: the run's :class:`Distribution`.
        epochs, steps, initial_epoch: as ``model.fit``'s ``epochs``, ``steps_per_epoch`` and
            ``initial_epoch`` (the loop runs epochs ``initial_epoch`` to ``epochs - 1``).
        class_weight: as ``model.fit``'s (a sample weight per label), or None.
        callbacks: Keras callbacks, called as ``model.fit`` calls them (train begin and end,
            epoch begin and end, batch end with the running ``loss``), ``model.stop_training``
            honoured after every batch and epoch, when set on any worker.

    Returns:
        The number of epochs run.
    """
    strategy = distribution.strategy
    loss_fn, optimizer = model.loss, model.optimizer
    with distribution.scope():
        optimizer.build(model.trainable_variables)
    weights = tf.constant(
        [1.0, 1.0] if class_weight is None else [class_weight[0], class_weight[1]], tf.float32
    )

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_image = loss_fn.call(tf.reshape(labels, (-1, 1)), probabilities)
            sample_weight = tf.gather(weights, tf.cast(labels, tf.int32))
            images_in_step = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(labels)[0], tf.float32)
            )
            weighted = tf.reduce_sum(tf.reshape(per_image, (-1,)) * sample_weight)
            loss = weighted / tf.maximum(images_in_step, 1.0)
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        per_replica = strategy.run(replica_step, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    data = iter(strategy.distribute_datasets_from_function(make_dataset))
    model.stop_training = False
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    epochs_run = 0
    for epoch in range(initial_epoch, epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        total = 0.0
        for step in range(steps):
            total += float(train_step(data))
            logs = {"loss": total / (step + 1)}
            for callback in callbacks:
                callback.on_train_batch_end(step, logs)
            if _any_replica(strategy, model.stop_training):
                model.stop_training = True
                break
        epochs_run += 1
        logs = {"loss": total / max(1, step + 1)}
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if _any_replica(strategy, model.stop_training):
            break
    for callback in callbacks:
        callback.on_train_end()
    return epochs_run


def _any_replica(strategy, flag: bool) -> bool:
    """True on every worker when ``flag`` is true on any: the workers stop at the same step.

    A stop asked for on the chief (the page's Stop button) or an early stop must end the loop
    on all workers at once, or the others would wait for a step that never comes.
    """
    mine = float(bool(flag))
    flags = strategy.run(lambda: tf.constant(mine))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0)


def global_steps(images: int, global_batch: int) -> int:
    """Steps per epoch: as many global batches as the training split holds (at least 1)."""
    return max(1, math.ceil(images / global_batch))

"""Training under tf.distribute: the custom step equals Keras' fit, on one replica and on two.

The multi-worker path (Ray Train, several processes) is in test_ray_train.py; here the
step it runs is checked against ``model.fit`` on the same global batches, and the pipeline's
sharding and the settings that a distributed run refuses are checked without Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.inference.predict import predict_files
from bcp_core.model.bundle import load_bundle
from bcp_core.model.dataset import ReadFailures, image_dataset
from bcp_core.model.strategy import (
    Distribution,
    local_distribution,
)
from bcp_core.model.training import train_model, training_pipeline
from tests.conftest import REPO

# A tiny model, data with class weights, and both ways of training it: the script runs as is
# in this process (one replica) and in a subprocess that splits the CPU into two replicas.
SCRIPT = textwrap.dedent(
    """
    import keras, numpy as np, tensorflow as tf
    from bcp_core.model.strategy import Distribution, fit_custom

    def tiny_model(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile(keras.optimizers.Adam(1e-2), keras.losses.BinaryCrossentropy())
        return model

    rng = np.random.default_rng(0)
    X = rng.random((30, 8, 8, 1)).astype("float32")  # 3 full batches and one of 6
    Y = (rng.random(30) > 0.6).astype("float32")
    CLASS_WEIGHT = {0: 0.7, 1: 1.9}
    GLOBAL_BATCH, EPOCHS = 8, 3

    def with_fit():
        model = tiny_model(1)
        model.fit(X, Y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                  class_weight=CLASS_WEIGHT)
        return model.get_weights()

    def with_custom(strategy):
        with strategy.scope():
            model = tiny_model(1)
        def data(context):
            batch = context.get_per_replica_batch_size(GLOBAL_BATCH)
            return tf.data.Dataset.from_tensor_slices((X, Y)).batch(batch).repeat()
        seen = []
        logger = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: seen.append(logs["loss"]))
        epochs = fit_custom(model, data, distribution=Distribution("multiworker", strategy),
                            epochs=EPOCHS, steps=-(-len(X) // GLOBAL_BATCH),
                            class_weight=CLASS_WEIGHT,
                            callbacks=[logger])
        return model.get_weights(), epochs, seen
    """
)


def max_difference(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_the_custom_step_on_one_replica_is_keras_fit():
    space: dict = {}
    exec(SCRIPT, space)  # noqa: S102 (the script above, run here on the default strategy)
    reference = space["with_fit"]()
    weights, epochs, losses = space["with_custom"](tf.distribute.get_strategy())
    assert epochs == 3 and len(losses) == 3 and all(np.isfinite(losses))
    assert max_difference(weights, reference) <= 1e-6


def test_the_custom_loop_starts_at_the_initial_epoch():
    space: dict = {}
    exec(SCRIPT, space)  # noqa: S102
    model = space["tiny_model"](1)
    data = tf.data.Dataset.from_tensor_slices((space["X"], space["Y"]))
    seen: list[int] = []
    logger = space["keras"].callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: seen.append(epoch)
    )
    epochs = space["fit_custom"](
        model, lambda context: data.batch(8).repeat(),
        distribution=Distribution("multiworker", tf.distribute.get_strategy()),
        epochs=3, initial_epoch=1, steps=4, class_weight=None, callbacks=[logger],
    )  # fmt: skip
    assert epochs == 2 and seen == [1, 2]


@pytest.mark.slow
def test_the_custom_step_on_two_replicas_equals_one_process(tmp_path):
    script = tmp_path / "two_replicas.py"
    script.write_text(
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "two = [tf.config.LogicalDeviceConfiguration()] * 2\n"
        "tf.config.set_logical_device_configuration(cpu, two)\n" + SCRIPT + "\nimport json\n"
        "strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])\n"
        "weights, epochs, _ = with_custom(strategy)\n"
        "reference = with_fit()\n"
        "print(json.dumps({'replicas': strategy.num_replicas_in_sync, 'epochs': epochs,\n"
        "  'diff': max(float(np.abs(a - b).max()) for a, b in zip(weights, reference)),\n"
        "  'moved': max(float(np.abs(a - b).max())\n"
        "               for a, b in zip(weights, tiny_model(1).get_weights()))}))\n",
        encoding="utf-8",
    )
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["replicas"] == 2 and found["epochs"] == 3
    assert found["moved"] > 1e-3  # training did change the weights...
    assert found["diff"] <= 1e-5  # ...and two replicas changed them as one process does


def test_workers_read_disjoint_shards_that_cover_the_split(tiny_manifest, tmp_path):
    cfg = TrainConfig(model="seed_cnn", image_size=(32, 24), batch_size=4, augment=False)
    paths = tiny_manifest["path"].tolist()
    labels = np.arange(len(paths))  # the label carries the row, to see which images came
    seen = []
    for index in (0, 1):
        ds = image_dataset(paths, labels, cfg.spec, batch_size=4, shard=(index, 2))
        seen.append(sorted(int(y) for _, batch in ds for y in batch.numpy()))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(len(paths)))
    # Training order: both workers shuffle alike, so each step's two halves make up the batch
    # one process would train on.
    whole = image_dataset(paths, labels, cfg.spec, batch_size=8, training=True, seed=3,
                          augment=False)  # fmt: skip
    halves = [
        image_dataset(
            paths,
            labels,
            cfg.spec,
            batch_size=4,
            training=True,
            seed=3,
            augment=False,
            shard=(index, 2),
        )  # fmt: skip
        for index in (0, 1)
    ]
    steps = list(zip(whole, *halves, strict=True))
    assert len(steps) == 5
    for (_, both), (_, first), (_, second) in steps:
        assert sorted(both.numpy()) == sorted([*first.numpy(), *second.numpy()])
    assert [int(y) for y in steps[0][0][1]] != sorted(int(y) for y in steps[0][0][1])  # shuffled
    train = tiny_manifest.iloc[:30]
    _, steps, _ = training_pipeline(train, cfg, ReadFailures(), batch_size=2, shard=(1, 2))
    assert steps == 8  # steps are the whole split's at the global batch (30 / 4), per worker too


def test_a_distributed_run_refuses_what_it_cannot_split():
    with pytest.raises(UserError, match="does not divide between 3 workers"):
        Distribution("multiworker", None, 0, 3).worker_batch(16)
    assert Distribution("multiworker", None, 1, 4).worker_batch(16) == 4
    with pytest.raises(UserError, match="Unknown distribution"):
        local_distribution("everywhere")


def test_mirrored_training_writes_a_bundle_that_records_it(tiny_manifest, tmp_path):
    cfg = TrainConfig(
        model="seed_cnn", epochs=1, image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=2
    )
    out = tmp_path / "mirrored"
    result = train_model(tiny_manifest, cfg, out, distribution=local_distribution("mirrored"))
    bundle = load_bundle(out)
    assert result.bundle == out and result.epochs_run == 1
    assert bundle.meta.training["distribute"] == {"mode": "mirrored", "workers": 1}
    # The bundle predicts its validation images as the run scored them.
    val = bundle.val_predictions
    again = predict_files(bundle, val["file"].tolist())
    np.testing.assert_allclose([r.probability for r in again], val["probability"], atol=1e-5)
    plain = train_model(tiny_manifest, cfg, tmp_path / "plain")
    assert "distribute" not in load_bundle(plain.bundle).meta.training

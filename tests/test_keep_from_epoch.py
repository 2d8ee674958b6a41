"""The first epoch a run may keep (``keep_from_epoch``): earlier epochs are kept only until it,
and early stopping counts from it."""

from __future__ import annotations

import pytest

from bcp_core.config import LITE_RECIPE, SCRATCH_RECIPE, TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.bundle import read_bundle_meta
from bcp_core.model.training import ImprovementTracker, train_model


def kept(scores: list[float], keep_from: int) -> tuple[list[int], int]:
    """(the epochs written, the best epoch) of a tracker fed these validation PR-AUCs."""
    written: list[int] = []
    tracker = ImprovementTracker(written.append, keep_from)

    class Model:  # the tracker reads only the weights of the model it watches
        def get_weights(self):
            return []

    tracker.set_model(Model())
    for epoch, score in enumerate(scores):
        tracker.on_epoch_end(epoch, {"val_pr_auc": score})
    return written, tracker.best_epoch


def test_earlier_epochs_are_kept_only_until_the_first_one_that_may_be():
    scores = [0.45, 0.40, 0.38, 0.42, 0.39]  # the first epoch scores best
    assert kept(scores, 1) == ([1], 1)
    assert kept(scores, 3) == ([1, 3, 4], 4)  # epoch 3 replaces epoch 1, epoch 4 beats it
    assert kept(scores, 5) == ([1, 5], 5)
    assert kept([0.30, 0.35, 0.50, 0.40], 2) == ([1, 2, 3], 3)  # as before when it improves


def test_the_lite_recipe_keeps_from_the_third_epoch_and_bundles_say_so_only_then():
    assert (LITE_RECIPE.keep_from_epoch, SCRATCH_RECIPE.keep_from_epoch) == (3, 1)
    lite = TrainConfig(model="efficientnet_lite0")
    assert lite.keep_from_epoch == 3 and lite.to_dict()["keep_from_epoch"] == 3
    assert "the best epoch from epoch 3 on" in LITE_RECIPE.describe()
    assert "keep_from_epoch" not in TrainConfig(model="default_cnn").to_dict()
    # a run shorter than that keeps its last epoch
    assert TrainConfig(model="efficientnet_lite0", epochs=2).first_kept_epoch == 2
    with pytest.raises(UserError, match="Keep-from epoch must be a whole number from 1 to 500"):
        TrainConfig(keep_from_epoch=0).validate()


@pytest.mark.parametrize(("keep_from", "best", "ran"), [(1, 1, 2), (3, 3, 4)])
def test_a_run_whose_scores_never_improve_keeps_the_first_epoch_it_may(
    tiny_manifest, tmp_path, keep_from, best, ran
):
    """At the smallest rate the validation ranking never changes, so no epoch beats the first
    one monitored: the run keeps epoch ``keep_from`` and stops ``patience`` epochs later."""
    cfg = TrainConfig(
        model="seed_cnn", image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=1,
        epochs=6, patience=1, learning_rate=1e-7, augment=False, keep_from_epoch=keep_from,
    )  # fmt: skip
    result = train_model(tiny_manifest, cfg, tmp_path / "run")
    assert (result.best_epoch, result.epochs_run) == (best, ran)
    assert read_bundle_meta(tmp_path / "run").metrics.best_epoch == best

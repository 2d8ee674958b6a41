"""The command-line contract: names, JSON keys, exit codes, one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bcp_core import config
from bcp_core.cli import main
from bcp_core.data.datasource import read_data_root
from bcp_core.model.files import META_FILE, MODEL_FILE
from tests.conftest import REPO, cli_command, tiny_train_argv


def test_match_json_keys_and_counts(small_demo, capsys):
    root, truth = small_demo
    assert main(["match", "--data-root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key, value in truth["counts"].items():
        assert out[key] == value
    assert len(out["unmatched"]) == len(truth["unmatched"])
    assert set(out["unmatched"][0]) == {"sheet", "row", "key", "reason"}


#: Every key of ``match --json``, in order: the counts, then what was read and found.
MATCH_JSON_KEYS = [
    "cancer_rows",
    "cancer_key_matched",
    "cancer_key_matched_raw",
    "cancer_images_found",
    "cancer_rows_without_path",
    "validation_rows",
    "validation_matched",
    "non_cancer_rows",
    "non_cancer_names_usable",
    "non_cancer_images_found",
    "images_in_manifest",
    "patients",
    "image_files_on_disk",
    "unreferenced_image_files",
    "source",
    "unmatched",
    "fixes",
    "notes",
]


def test_match_json_is_the_match_result_with_the_contract_keys(small_demo, capsys):
    root, truth = small_demo
    assert main(["match", "--data-root", str(root), "--json", "--show-ids"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == MATCH_JSON_KEYS
    result = read_data_root(root)
    assert out == json.loads(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    assert {k: out[k] for k in MATCH_JSON_KEYS[:14]} == vars(result.stats)
    assert out["image_files_on_disk"] == sum(i["on_disk"] for i in truth["images"])


def test_match_table_is_readable(small_demo, capsys):
    root, truth = small_demo
    assert main(["match", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"keys matched            {truth['counts']['cancer_key_matched']:>6}" in out
    assert "Unmatched rows:" in out and "no validation row has this key" in out


def test_user_error_is_one_sentence_on_stderr_with_exit_2(tmp_path, capsys):
    assert main(["match", "--data-root", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: Data root not found:")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_demo_data_refuses_a_bad_scale_through_argparse(tmp_path):
    proc = subprocess.run(
        cli_command("demo-data", "--out", str(tmp_path / "x"), "--scale", "xl"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'xl'" in proc.stderr


def test_module_entry_point_runs_demo_data_and_match(tmp_path):
    out = tmp_path / "demo ı"
    proc = subprocess.run(
        cli_command(
            "demo-data", "--out", str(out), "--image-height", "64", "--seed", "3", "--json"
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    proc = subprocess.run(
        cli_command("match", "--data-root", str(out), "--json"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cancer_key_matched"] == made["cancer_key_matched"]


@pytest.mark.slow
def test_train_progress_marks_the_epochs_of_the_head_alone(small_demo, tmp_path, capsys):
    root, _ = small_demo
    argv = [
        "train", "--data-root", str(root), "--out", str(tmp_path / "b"),
        "--model", "efficientnet_lite0", "--image-size", "64", "48", "--epochs", "2",
        "--batch-size", "8", "--head-epochs", "1", "--tta-passes", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    lines = [line.strip() for line in capsys.readouterr().err.splitlines()]
    assert any(line.startswith("epoch 1 (head alone): loss") for line in lines), lines
    assert any(line.startswith("epoch 2: loss") for line in lines), lines


@pytest.mark.slow
def test_train_json_keys_and_zero_patient_overlap(small_demo, tmp_path, capsys):
    root, _ = small_demo
    out = tmp_path / "bundle"
    code = main(tiny_train_argv(root, out, "--epochs", "2", "--batch-size", "8", "--json"))
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in (
        "bundle",
        "epochs_run",
        "val_roc_auc",
        "val_pr_auc",
        "threshold",
        "train_patients",
        "val_patients",
        "patient_overlap",
    ):
        assert key in result
    assert result["patient_overlap"] == 0 and result["epochs_run"] == 2
    assert (out / MODEL_FILE).is_file() and (out / META_FILE).is_file()
    # The prepared images were kept where $BCP_IMAGE_CACHE says, one per image read.
    kept = list((tmp_path / "image_cache").glob("64x48-*/*/*.npy"))
    assert len(kept) == result["train_images"] + result["val_images"]


def test_train_refuses_bad_settings_before_reading_data(tmp_path, capsys):
    code = main(
        [
            "train",
            "--data-root",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "b"),
            "--epochs",
            "0",
        ]
    )
    assert code == 2
    assert "Epochs must be a whole number from 1 to 500, got 0." in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--bundle", "no/such/bundle", "x.jpg"],
        ["evaluate", "--bundle", "no/such/bundle"],
        ["export", "--bundle", "no/such/bundle", "--format", "onnx", "--out", "o"],
        ["train", "--data-root", "no/such/root", "--out", "b"],
        ["train", "--data-root", ".", "--out", "b", "--epochs", "0"],
        ["train", "--data-root", ".", "--out", "b", "--start-from", "no/such/bundle"],
    ],
)
def test_argument_and_path_errors_are_answered_before_tensorflow_is_imported(argv):
    """A typo costs no TensorFlow or scikit-learn start-up (seconds; under 0.5 s left): the
    answer comes from the arguments."""
    code = (
        "import sys; from bcp_core.cli import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('tensorflow', 'sklearn') if m in sys.modules]; "
        "print(' '.join(heavy) or 'none'); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "none"
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


def test_a_prediction_prints_no_tensorflow_start_up_lines(demo_bundle, small_demo):
    root, truth = small_demo
    image = next(i for i in truth["images"] if i["on_disk"])
    argv = ("predict", "--bundle", str(demo_bundle), str(root / image["relpath"]), "--json")
    done = subprocess.run(cli_command(*argv), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["probability"] >= 0
    for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "rebuild TensorFlow"):
        assert noise not in done.stderr, done.stderr


def test_match_masks_patient_ids_unless_asked(small_demo, capsys):
    root, truth = small_demo
    patients = {i["patient_id"] for i in truth["images"]}
    assert main(["match", "--data-root", str(root)]) == 0
    masked = capsys.readouterr().out
    assert "Unmatched rows:" in masked and "***" in masked
    assert not [p for p in patients if p and len(p) > 5 and p in masked]
    assert main(["match", "--data-root", str(root), "--show-ids", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["unmatched"]
    assert any(u["key"].rsplit("-", 1)[-1].startswith("DIT") for u in shown)
    assert not any("*" in u["key"] for u in shown)


def test_local_predict_writes_a_csv_of_the_results(demo_bundle, small_demo, tmp_path, capsys):
    import pandas as pd

    root, truth = small_demo
    files = [str(root / i["relpath"]) for i in truth["images"] if i["on_disk"]][:3]
    (tmp_path / "note.txt").write_text("=cmd|' /C calc'!A0")
    out = tmp_path / "results.csv"
    argv = ["predict", "--bundle", str(demo_bundle), *files, str(tmp_path / "note.txt")]
    assert main([*argv, "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert set(table["label"].iloc[:3]) <= {"0", "1"}  # whole numbers, not 1.0
    assert len(table) == 4
    assert pd.to_numeric(table["probability"].iloc[:3]).between(0, 1).all()
    assert pd.to_numeric(table["label"].iloc[:3]).isin([0, 1]).all() and table["error"].iloc[3]
    assert main([*argv, "--out", str(tmp_path / "results.parquet")]) == 2
    assert "--out names the CSV file" in capsys.readouterr().err


def test_help_shows_defaults_and_an_example_for_every_command(capsys):
    from bcp_core.cli import EXAMPLES

    for command in EXAMPLES:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "example:" in text and EXAMPLES[command] in text, command
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: 16)" in text and f"(default: {config.DEFAULT_MODEL}, or" in text
    assert "(default: the model's recipe)" in text
    recipes = text.split("recipes (the settings a run takes unless given):")[1]
    assert "efficientnet_lite0, efficientnet_lite2: 320 x 256, up to 10 epochs" in recipes
    assert "default_cnn" in recipes and "160 x 128, up to 60 epochs" in " ".join(recipes.split())


def test_settings_not_given_come_from_the_models_recipe(tmp_path):
    """``train --model efficientnet_lite0`` alone trains as measured for Lite0; what is given
    wins, and ``--no-fine-tune`` turns the recipe's fine-tuning off."""
    from bcp_core.cli import _train_config, build_parser

    def cfg(*extra):
        args = build_parser().parse_args(
            ["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "b"), *extra]
        )
        return _train_config(args)

    lite = cfg("--model", "efficientnet_lite0")
    assert (lite.image_size, lite.epochs, lite.patience, lite.learning_rate) == (
        (320, 256), 10, 4, 3e-4,
    )  # fmt: skip
    assert (lite.fine_tune, lite.frozen_stages, lite.batch_norm) == (True, 4, "train")
    cnn = cfg("--model", "default_cnn")
    assert (cnn.image_size, cnn.epochs, cnn.patience, cnn.fine_tune) == ((160, 128), 60, 20, False)
    mine = cfg("--model", "efficientnet_lite0", "--epochs", "3", "--image-size", "64", "48",
               "--no-fine-tune", "--batch-norm", "frozen")  # fmt: skip
    assert (mine.epochs, mine.image_size, mine.fine_tune, mine.batch_norm) == (
        3, (64, 48), False, "frozen",
    )  # fmt: skip
    assert mine.frozen_stages == 4 and mine.patience == 4  # the rest still the recipe's
    phased = cfg("--model", "efficientnet_lite0", "--head-epochs", "2", "--schedule", "cosine")
    assert (phased.head_epochs, phased.schedule, phased.epochs) == (2, "cosine", 10)
    seeded = cfg("--seed", "43", "--split-seed", "42")
    assert (seeded.seed, seeded.split_seed, seeded.patient_split_seed) == (43, 42, 42)
    assert cfg("--seed", "43").patient_split_seed == 43
    assert lite.keep_from_epoch == 3 and cnn.keep_from_epoch == 1
    assert cfg("--model", "efficientnet_lite0", "--keep-from-epoch", "1").keep_from_epoch == 1
    assert lite.weight_ema == 0 and cfg("--weight-ema", "0.995").weight_ema == 0.995
    assert cfg() == config.TrainConfig().validate()


@pytest.mark.parametrize(
    ("model", "weights"),
    [("efficientnet_lite0", "imagenet"), ("default_cnn", "none"), ("resnet50", "none")],
)
def test_train_takes_each_models_own_default_weights(model, weights):
    """A run of a pretrained backbone without --weights starts from its ImageNet weights."""
    from bcp_core.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--data-root", ".", "--out", "b", "--model", model])
    assert _train_config(args).weights == weights

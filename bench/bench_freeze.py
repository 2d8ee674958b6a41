"""Benchmark: the training step of the Lite recipe by freezing depth.

What is compared: one training step (``train_on_batch``) of EfficientNet-Lite0 from its
packaged ImageNet weights, built and compiled exactly as ``train`` builds it
(``bcp_core.model.training.compile_model`` with the Lite recipe's ``TrainConfig``: 320 x 256,
batch 16, batch norm learning, Adam 3e-4), with the stem and the first N of its seven stages
frozen, for each N of ``--depths`` (default 0 and 2-6). A frozen stage takes no gradient, so a
deeper freeze leaves less of the backward pass; the forward pass is the same for all.

Each depth's model is built once and warmed up (its first steps trace the graph). Then the
depths take turns, ``--steps`` steps each per round over ``--rounds`` rounds, on the same
batch, so machine load falls on all of them alike; each depth's figure is the median of its
rounds' seconds per step, and its ratio is to ``--baseline`` (default 2, stages 1-2 frozen)
measured in the same run. The batch is grey noise of the pipeline's shape: the step's cost
does not depend on what the pixels show.

What it costs in ROC-AUC is the real-film benchmark's to say (``bench/bench_real_films.py``,
``--frozen-stages``; docs/benchmarks.md).

Run: ``.venv/bin/python bench/bench_freeze.py`` (about 5 minutes on 2 cores), or ``--quick``
for a smoke run at 96 x 80. Results: a table on stdout and ``bench/results/bench_freeze.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "results" / "bench_freeze.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(depth: int, image_size: tuple[int, int], seed: int):
    """Lite0 at ``depth`` frozen stages, compiled as ``train`` compiles it, its batch size, and
    its counts of trainable and non-trainable weights (frozen ones and batch-norm statistics)."""
    from bcp_core.config import TrainConfig
    from bcp_core.model.training import compile_model

    cfg = TrainConfig(
        model="efficientnet_lite0", frozen_stages=depth, image_size=image_size, seed=seed
    )
    model = compile_model(cfg, 0.5)
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    fixed = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return model, cfg.batch_size, trainable, fixed


def seconds_per_step(model, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def run(args: argparse.Namespace) -> dict:
    image_size = (96, 80) if args.quick else tuple(args.image_size)
    built = {depth: build(depth, image_size, args.seed) for depth in args.depths}
    batch = built[args.depths[0]][1]  # the recipe's batch size, the same at every depth
    x = np.random.default_rng(args.seed).uniform(0.0, 1.0, (batch, *image_size, 1))
    x = x.astype("float32")
    y = (np.arange(batch) % 4 == 0).astype("float32")  # one cancer film in four
    for depth, (model, _, trainable, fixed) in built.items():
        seconds_per_step(model, x, y, args.warmup)
        log(f"depth {depth}: built, {trainable:,} trainable weights, {fixed:,} not")
    times: dict[int, list[float]] = {depth: [] for depth in args.depths}
    for round_no in range(args.rounds):
        for depth in args.depths:
            times[depth].append(seconds_per_step(built[depth][0], x, y, args.steps))
        spent = ", ".join(f"{d}: {times[d][-1]:.3f} s" for d in args.depths)
        log(f"round {round_no + 1}/{args.rounds} (s per step by depth): {spent}")
    base = statistics.median(times[args.baseline])
    rows = []
    for depth, (_, _, trainable, fixed) in built.items():
        median = statistics.median(times[depth])
        rows.append({
            "frozen_stages": depth,
            "trainable_weights": trainable,
            "non_trainable_weights": fixed,
            "seconds_per_step": median,
            "rounds": times[depth],
            "images_per_s": batch / median,
            "ratio_to_baseline": median / base,
        })  # fmt: skip
    return {
        "image_size": list(image_size),
        "batch_size": batch,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "baseline_frozen_stages": args.baseline,
        "quick": args.quick,
        "rows": rows,
    }


def stages_name(depth: int) -> str:
    return f"stem + stages 1-{depth}" if depth else "nothing"


def format_report(result: dict) -> str:
    h, w = result["image_size"]
    lines = [
        f"Lite0 training step at {h} x {w}, batch {result['batch_size']}; median of "
        f"{result['rounds']} rounds of {result['steps_per_round']} steps",
        f"{'frozen':>18} {'trainable':>11} {'s / step':>9} {'images/s':>9} "
        f"{'vs ' + stages_name(result['baseline_frozen_stages']):>22}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{stages_name(row['frozen_stages']):>18} {row['trainable_weights']:>11,} "
            f"{row['seconds_per_step']:>9.3f} {row['images_per_s']:>9.1f} "
            f"{row['ratio_to_baseline']:>21.2f}x"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="+", default=[0, 2, 3, 4, 5, 6])
    p.add_argument("--image-size", type=int, nargs=2, default=[320, 256], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=5, help="steps per depth per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per depth first")
    p.add_argument("--baseline", type=int, default=2, help="the depth ratios are taken against")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quick", action="store_true", help="smoke run at 96 x 80, 1 round")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if min(args.steps, args.rounds, args.warmup) < 1:
        p.error("--steps, --rounds and --warmup must be at least 1")
    if any(not 0 <= d <= 7 for d in [*args.depths, args.baseline]):
        p.error("--depths and --baseline: each between 0 and 7 (Lite0 has seven stages)")
    args.depths = sorted(set(args.depths) | {args.baseline})
    if args.quick:
        args.rounds, args.steps = 1, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    report = format_report(result)
    print(report)
    payload = {
        "benchmark": "bench_freeze",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average_at_end": list(os.getloadavg()),
        "wall_s": time.perf_counter() - start,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"\nWrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak memory of scoring the validation split with test-time passes, at the end of a run.

A run whose recipe takes test-time passes (EfficientNet-Lite: 4) scores its finished model's
validation images with them, so that the threshold is chosen on the scores prediction gives.
Called on every variant of a batch at once (16 images x 4 passes = 64 in one eager call), a
Lite0 run at 320 x 256 peaked at about 10 GB, against 3.7 GB for the epochs before it, and a
fold of the real-film benchmark was killed for memory beside two other trainings. The product
now scores one variant of the batch at a time (``ValidationScorer.score``).

This script measures both in fresh child processes on the same films: the peak resident memory
(``ru_maxrss``) after one pass and after the passes, the product's way against the former way
(all variants in one call: the baseline, written out here), and checks that both give the same
probabilities. Results go to stdout and ``bench/results/bench_tta_memory.json``.

    .venv/bin/python bench/bench_tta_memory.py --films /data/films --images 160
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAYS = ("product", "one_call")


def child(way: str, files: list[str], passes: int, model_name: str) -> dict:
    """Score ``files`` once and with ``passes``; peak memory after each, and the probabilities."""
    import keras
    import numpy as np

    from bcp_core.config import TrainConfig
    from bcp_core.imaging import tta
    from bcp_core.model.dataset import image_dataset
    from bcp_core.model.training import ValidationScorer, compile_model

    cfg = TrainConfig(model=model_name)
    ds = image_dataset(files, np.arange(len(files)), cfg.spec, batch_size=cfg.batch_size)
    ds = ds.map(lambda x, i: (x, keras.ops.cast(i, "int32")))
    model = compile_model(cfg, 0.3)
    scorer = ValidationScorer(ds, np.zeros(len(files), int))
    scorer.set_model(model)

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    scorer.score(1)
    one_pass = peak_mb()
    if way == "product":
        scorer.score(passes)
        probabilities = scorer.probabilities
    else:  # the former way: every variant of a batch in one call
        out = []
        for images, _ in ds:
            batch = np.concatenate([tta.variants(x, passes) for x in np.asarray(images)])
            out.append(np.asarray(model(batch, training=False)).reshape(-1, passes).mean(axis=1))
        probabilities = np.concatenate(out)
    return {
        "way": way,
        "peak_mb_one_pass": round(one_pass),
        "peak_mb_passes": round(peak_mb()),
        "probabilities": [float(p) for p in probabilities],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--films", type=Path, required=True, help="a folder of JPEG films (searched)")
    p.add_argument("--images", type=int, default=160, help="validation images to score")
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    files = sorted(str(f) for f in args.films.rglob("*.jpg"))[: args.images]
    if len(files) < args.images:
        raise SystemExit(f"{args.films} holds {len(files)} JPEGs, fewer than --images.")
    if args.child:
        print(json.dumps(child(args.child, files, args.passes, args.model)))
        return 0
    results = {}
    for way in WAYS:
        cmd = [sys.executable, __file__, "--films", str(args.films), "--images", str(args.images)]
        cmd += ["--passes", str(args.passes), "--model", args.model, "--child", way]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = results["product"], results["one_call"]
    diff = max(abs(x - y) for x, y in zip(a["probabilities"], b["probabilities"], strict=True))
    summary = {
        "model": args.model,
        "images": args.images,
        "passes": args.passes,
        "product_peak_mb": a["peak_mb_passes"],
        "one_call_peak_mb": b["peak_mb_passes"],
        "one_pass_peak_mb": a["peak_mb_one_pass"],
        "ratio": round(a["peak_mb_passes"] / b["peak_mb_passes"], 3),
        "max_probability_difference": diff,
    }
    print(
        f"{args.model}, {args.images} films, {args.passes} passes: peak {a['peak_mb_passes']} MB "
        f"one variant at a time, {b['peak_mb_passes']} MB all in one call "
        f"({summary['ratio']}x); one pass {a['peak_mb_one_pass']} MB; probabilities differ by "
        f"at most {diff:.2g}"
    )
    out = ROOT / "bench" / "results" / "bench_tta_memory.json"
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How true is the training ETA? Its error at each epoch's end against the time that was left.

Trains the default model on the small synthetic demo dataset (written to a temporary folder)
for ``--epochs`` epochs without early stopping, exactly as the training page and the CLI do
(``bcp_core.model.training.train_model`` with an event sink), and records at the end of each
epoch the ETA the run announced (``EpochEnded.eta_s``) and the time that was in fact left until
the run returned (the last epoch's scoring and the bundle write included). The target (issue:
"honest progress") is an error within 30 % after the first epoch.

Run: ``.venv/bin/python bench/bench_eta.py [--epochs 6 --size 160 128]`` (a few minutes on 2
cores). Results: stdout and ``bench/results/bench_eta.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, nargs=2, default=[160, 128])
    args = parser.parse_args()

    from bcp_core.config import DemoConfig, TrainConfig
    from bcp_core.data.datasource import read_data_root
    from bcp_core.model.events import EpochEnded
    from bcp_demo.writer import write_demo_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-eta-"))
    write_demo_dataset(work / "demo", DemoConfig(scale="small", seed=7), workers=1)
    manifest = read_data_root(work / "demo").manifest
    cfg = TrainConfig(
        image_size=tuple(args.size), epochs=args.epochs, patience=args.epochs, seed=42
    )
    ends: list[tuple[int, float, float]] = []  # epoch, time, announced ETA

    def sink(event) -> None:
        if isinstance(event, EpochEnded):
            ends.append((event.epoch, time.monotonic(), event.eta_s))

    from bcp_core.model.training import train_model

    train_model(manifest, cfg, work / "bundle", on_event=sink)
    done = time.monotonic()
    rows = []
    for epoch, at, eta in ends:
        left = done - at
        rows.append(
            {
                "epoch": epoch,
                "eta_s": round(eta, 1),
                "actual_s": round(left, 1),
                "error": round((eta - left) / left, 3) if epoch < args.epochs else None,
            }
        )
        print(rows[-1], flush=True)
    errors = [abs(r["error"]) for r in rows if r["error"] is not None]
    result = {
        "epochs": args.epochs,
        "size": args.size,
        "images": len(manifest),
        "rows": rows,
        "max_abs_error_after_epoch_1": max(errors) if errors else None,
        "load_average": list(os.getloadavg()),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_eta.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

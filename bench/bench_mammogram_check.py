"""How many real films the "does this look like a mammogram?" check refuses (target: none).

Every image under the given folders is decoded as prediction decodes it for a bundle's input
size (``--size``, default 320 x 256) and passed to
:func:`bcp_core.imaging.preparation.mammogram_doubt`; the script counts the refusals per folder
and lists each with its reason. The images are only read.

    .venv/bin/python -m bcp_core demo-data --out /tmp/x --scale small
    .venv/bin/python bench/bench_mammogram_check.py /work/films/data/malignant \\
        /work/films/data/benign /tmp/x

Results: stdout and ``bench/results/bench_mammogram_check.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bcp_core.config import PreprocessSpec  # noqa: E402
from bcp_core.errors import UserError  # noqa: E402
from bcp_core.imaging.decode import decode_image  # noqa: E402
from bcp_core.imaging.preparation import decode_size, mammogram_doubt  # noqa: E402
from bcp_core.inference.predict import expand_inputs  # noqa: E402


def check_folder(folder: Path, spec: PreprocessSpec) -> dict:
    """Images, refusals (file and reason) and unreadable files under ``folder``."""
    files = expand_inputs([folder])
    refused, unreadable = [], []
    for path in files:
        try:
            decoded = decode_image(path, min_size=decode_size(spec))
        except UserError as exc:
            unreadable.append({"file": str(path), "error": str(exc)})
            continue
        doubt = mammogram_doubt(decoded.gray, decoded.colour)
        if doubt:
            refused.append({"file": str(path), "reason": doubt})
    return {"images": len(files), "refused": refused, "unreadable": unreadable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--size", nargs=2, type=int, default=(320, 256), metavar=("H", "W"))
    args = parser.parse_args()
    spec = PreprocessSpec(*args.size)
    results = {"size": list(args.size), "folders": {}}
    for folder in args.folders:
        found = check_folder(folder, spec)
        results["folders"][str(folder)] = found
        print(f"{folder}: {len(found['refused'])} of {found['images']} refused")
        for item in found["refused"]:
            print(f"  {Path(item['file']).name}: {item['reason']}")
    out = ROOT / "bench" / "results" / "bench_mammogram_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

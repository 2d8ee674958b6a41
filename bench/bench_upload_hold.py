"""What one anonymous client can make the server hold through the upload endpoint, and for how long.

Streamlit keeps every uploaded file of a session in the server's memory until the page drops it
or the session ends. The dashboard caps one upload at ``BCP_MAX_UPLOAD_MB`` (50 MB, refused from
its declared length before it is read, ``dashboard.server.ServerGuard``); the page predicts at
most 32 files at once, but the endpoint itself takes files for any open session, whatever the
page shows. This script measures the rest, on a real server in demo mode (no sign-in: anyone
who reaches the port is a visitor):

1. start ``streamlit run serve.py`` (demo mode, an empty data root and bundles folder);
2. open one websocket session with the raw client (``tests/rawclient.py``), as a script would
   (it takes the XSRF cookie the server hands every visitor);
3. PUT ``--files`` incompressible files of ``--mb`` MB each to that session's upload address
   (the browser's own request) and read the server's resident memory (``VmRSS``) after each;
4. close the session and read the memory again over ``--linger`` seconds.

Run: ``.venv/bin/python bench/bench_upload_hold.py [--files 20 --mb 49 --linger 150]`` (about
3 minutes; needs ``--files x --mb`` MB free). Results: stdout and
``bench/results/bench_upload_hold.json``.
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

from tests.e2e.conftest import dashboard_server  # noqa: E402
from tests.rawclient import RawClient  # noqa: E402


def server_rss(log_dir: Path) -> float:
    """Resident memory of the dashboard process (the streamlit child), in GB."""
    pid = int((log_dir / "server.pid").read_text())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=int, default=49, help="MB per file (cap: 50)")
    parser.add_argument("--linger", type=int, default=150, help="seconds watched after closing")
    args = parser.parse_args()
    here = Path(tempfile.mkdtemp(prefix="bench-upload-hold-"))
    (here / "data").mkdir()
    (here / "bundles").mkdir()
    env = {
        "BCP_MODE": "demo",
        "BCP_DATA_ROOT": str(here / "data"),
        "BCP_ALLOWED_ROOTS": str(here),
        "BCP_BUNDLES_DIR": str(here / "bundles"),
        "BCP_AUDIT_LOG": str(here / "audit.jsonl"),
    }
    result: dict = {"files": args.files, "mb_each": args.mb, "uploads": [], "after_close": []}
    with dashboard_server(here, env) as url:
        time.sleep(2)
        result["idle_gb"] = server_rss(here)
        client = RawClient(url)
        client.run("predict")
        assert client.session_id, "the server named no session"
        result["session_gb"] = server_rss(here)
        for i in range(args.files):
            status = client.upload(os.urandom(args.mb * 10**6))[0]
            result["uploads"].append({"n": i + 1, "status": status, "rss_gb": server_rss(here)})
            print(result["uploads"][-1], flush=True)
        closed = time.monotonic()
        client.close()
        while (waited := time.monotonic() - closed) < args.linger:
            result["after_close"].append({"s": round(waited), "rss_gb": server_rss(here)})
            print(result["after_close"][-1], flush=True)
            time.sleep(15)
        result["after_close"].append({"s": args.linger, "rss_gb": server_rss(here)})
    accepted = [u for u in result["uploads"] if u["status"] == 204]
    result["accepted"] = len(accepted)
    result["held_gb"] = max(u["rss_gb"] for u in result["uploads"]) - result["session_gb"]
    result["left_after_close_gb"] = result["after_close"][-1]["rss_gb"] - result["session_gb"]
    print(json.dumps({k: v for k, v in result.items() if k not in ("uploads", "after_close")}))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_upload_hold.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""What a user sees when the MLflow UI opens on a grid's experiment: screenshots in headless Chromium.

Not a test (it needs a browser): a documented check for the MLflow layout (issue 11 point 8).

    pip install playwright            # the Python driver only; the browser is the system's
    apt-get install chromium          # Debian/Ubuntu; or point --chromium at any Chrome/Chromium
    python tools/mlflow_ui_check.py --tracking-uri sqlite:////abs/mlflow.db --experiment s3-synthetic --out DIR

Starts `mlflow server` on a free local port over the store (read-only use), opens the experiment's
run list, its chart view, and the first trial run's metric page, and writes one PNG per view to
DIR. It prints what the pages say (row count, the metric names visible) so the check can be read
without opening the images.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"error: the MLflow server did not answer at {url} within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracking-uri", required=True, help="the grid's store, e.g. sqlite:////abs/mlflow.db")
    ap.add_argument("--experiment", default="s3-synthetic", help="experiment name (default s3-synthetic)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the browser binary")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("error: this check needs playwright: pip install playwright", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: no experiment {args.experiment!r} in {args.tracking_uri}", file=sys.stderr)
        return 2
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get("s3.role") == "trial"]
    trial = next((r for r in trials if r.data.tags.get("s3.method") == "s3"), trials[0] if trials else None)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.tracking_uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(base + "/health")
        views = {"charts": f"{base}/#/experiments/{exp.experiment_id}/runs?compareRunsMode=CHART",
                 "runs": f"{base}/#/experiments/{exp.experiment_id}/runs?compareRunsMode=TABLE"}
        if trial is not None:
            views["trial"] = f"{base}/#/experiments/{exp.experiment_id}/runs/{trial.info.run_id}/model-metrics"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            for name, url in views.items():
                page.goto(url)
                # the UI renders after its API calls return; a loaded machine needs a while
                for _ in range(240):
                    body = page.inner_text("body")
                    if "matching runs" in body or "Model metrics" in body:   # the list, or a run page
                        if not any(w in body for w in ("Loading", " 0 matching runs", "Run page loading")):
                            break
                    page.wait_for_timeout(1000)
                page.wait_for_timeout(15000)       # charts draw after the text is there
                text = " ".join(page.inner_text("body").split())
                path = args.out / f"mlflow_{name}.png"
                page.screenshot(path=str(path), full_page=False)
                print(f"{name}: {path}\n  {text[:1200]}")
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

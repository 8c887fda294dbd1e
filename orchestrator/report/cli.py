"""`python -m orchestrator.report`: flags, exit codes and the one-line summary on stdout.

Exit codes: 0 report written; 2 nothing to report or the store cannot be read (one error line on
stderr, after any progress lines).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable

from orchestrator.mlflow_layout import default_tracking_uri
from orchestrator.report import DEFAULT_OUT_DIR, build_report, log_report_to_parent
from orchestrator.report.read import FAILED, FINISHED, RUNNING, ReportError, check_sqlite_exists, first_line


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.report",
        description="Plots and a paper-style table from the S3 trials in an MLflow store.")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--experiment", dest="experiments", action="extend", nargs="+",
                        metavar="NAME", help="experiment name(s); default: every s3-* experiment")
    parser.add_argument("--parent-run-id", default=None, help="only this grid's trials")
    parser.add_argument("--out", default=DEFAULT_OUT_DIR, help="output directory (./report)")
    parser.add_argument("--log-to-parent", action="store_true",
                        help="also log the report as artifacts of --parent-run-id")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    """Build the report as the flags say; returns the exit code."""
    args = _parse_args(argv)
    if args.log_to_parent and not args.parent_run_id:
        print("error: report: --log-to-parent needs --parent-run-id", file=sys.stderr)
        return 2
    uri = args.tracking_uri or default_tracking_uri()
    # Fail fast on an unreachable server instead of MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    try:
        check_sqlite_exists(uri)
        # MLflow: a second of import, and it reads the retry settings above; the report itself
        # only reads through the client it is given
        from mlflow.tracking import MlflowClient
        try:
            client = MlflowClient(tracking_uri=uri)
        except Exception as error:
            raise ReportError(f"cannot open tracking URI {uri}: {first_line(error)}") from error
        result = build_report(client, args.experiments, args.out, args.parent_run_id)
        if args.log_to_parent:
            log_report_to_parent(client, args.parent_run_id, args.out)
    except ReportError as error:
        print(f"error: report: {' '.join(str(error).split())}", file=sys.stderr)  # one line, as run_grid.py
        return 2
    print(f"report: {len(result.table)} table row(s), {result.counts.get(FINISHED, 0)} finished / "
          f"{result.counts.get(FAILED, 0)} failed / {result.counts.get(RUNNING, 0)} running "
          f"trials -> {Path(args.out).resolve() / 'index.html'}")
    for note in result.notes:
        print(f"report: note: {note}")
    return 0

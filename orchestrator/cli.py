"""run_grid.py's command line. Every flag has a default: no arguments runs the `default` preset
on the synthetic benchmark, on a local Ray instance, into ./mlflow.db, then writes ./report."""
from __future__ import annotations

import argparse
import ast
import os
import sys

from orchestrator import console
from orchestrator.errors import user_errors
from orchestrator.mlflow_layout import default_tracking_uri
from s3core.data.registry import dataset_names
from search_spaces import PRESETS, load_preset


def parse_assignments(items) -> dict:
    """["chi=4", "probe_l2=[0.01]"] -> {"chi": 4, "probe_l2": [0.01]}: values parsed as Python
    literals, anything else kept as a string."""
    store = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            store[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            store[key] = raw
    return store


class _KeyValue(argparse.Action):
    """--set chi=4 --set lambda_min=0.2: repeated key=value pairs, values parsed as Python literals."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            parsed = parse_assignments(values)
        except ValueError as err:
            parser.error(f"{option_string}: {err}")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), **parsed})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_grid.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run S3 trials (Ray Tune + Ray Train), track them in MLflow, write the report.",
        epilog="Examples:\n  python run_grid.py\n  python run_grid.py --preset smoke\n"
               "  python run_grid.py --preset paper --benchmark mosi --data-dir ~/multibench --gpus-per-trial 0.25\n"
               "  ray exec clusters/gpu.yaml --tmux 'bash ~/s3/clusters/run_grid.sh --preset paper --benchmark mosei "
               "--data-dir ~/data/multibench'\n"
               "  python run_grid.py --resume   (continue an interrupted grid: same flags plus --resume)")
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", default="default", choices=PRESETS, help="search space / grid (search_spaces/)")
    g.add_argument("--benchmark", nargs="+", default=None,
                   help=f"benchmark(s): {', '.join(dataset_names())} (default: the preset's)")
    g.add_argument("--data-dir", default=None, help="folder with the MultiBench .pkl files, or the .npz / Arrow "
                                                     "folder for 'arrays'")
    g.add_argument("--modalities", nargs="+", default=None, help="subset of modalities (MultiBench: default vision "
                                                                 "text, the paper's; 'all' adds audio)")
    g.add_argument("--label-rule", default=None, help="MultiBench label rule: nonnegative (y>=0, the paper's), "
                                                      "positive (y>0), binary (default: the benchmark's)")
    g.add_argument("--source-file", default=None, help="MultiBench: which file to read, e.g. mosi_data.pkl "
                                                       "(default: the benchmark's first file; never a fallback)")
    g.add_argument("--alignment", default=None, help="MultiBench: text_start (default, MultiBench's aligned "
                                                     "mode) or nonzero (each modality masks its own zero steps)")
    g.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the preset's)")
    g.add_argument("--set", nargs="+", action=_KeyValue, default=None, metavar="FIELD=VALUE",
                   help="override S3Config fields for every trial, e.g. --set epochs_select=5 tau=0.07")
    g.add_argument("--grid", nargs="+", action=_KeyValue, default=None, metavar="FIELD=[V1,V2]",
                   help="sweep S3Config fields (replaces the preset's list for that field), e.g. "
                        "--grid chi=[2,8] tau=[0.05,0.1]")
    g.add_argument("--synthetic", nargs="+", action=_KeyValue, default=None, metavar="FIELD=VALUE",
                   help="override the synthetic benchmark, e.g. --synthetic label=shared n_train=4000")
    g.add_argument("--data-option", nargs="+", action=_KeyValue, default=None, metavar="OPTION=VALUE",
                   help="an option of the benchmark's loader that has no flag of its own (its registry entry, "
                        "s3core/data/registry.py)")
    g.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs_special=N")
    g.add_argument("--num-samples", type=int, default=None, help="Optuna trials per study (search preset)")
    g.add_argument("--seed-search", type=int, default=0, help="Optuna sampler seed")
    g = p.add_argument_group("tracking and output")
    g.add_argument("--tracking-uri", default=default_tracking_uri(),
                   help="MLflow tracking URI (env MLFLOW_TRACKING_URI, else an absolute SQLite file here)")
    g.add_argument("--experiment", default=None, help="MLflow experiment name (default: s3-<benchmark>)")
    g.add_argument("--report-dir", default="report", help="where the report is written")
    g.add_argument("--storage-path", default=None, help="Ray storage for checkpoints (default ./s3_runs; shared "
                                                        "storage such as s3://... or NFS on multi-node clusters)")
    g.add_argument("--no-stage-cache", action="store_true",
                   help="train every stage of every trial: by default a training stage whose inputs (data, s3core "
                        "source, the config fields it reads, seed) match one already trained loads its result from "
                        "<storage>/stage-cache instead (s3core/stagecache.py); each run's s3.stage_cache.* tags say "
                        "which stages were reused and from which run")
    g.add_argument("--order", default="longest-first", choices=["longest-first", "grid"],
                   help="the queue of a grid's trials: longest-first (by epochs and keep-ratios, a stage another "
                        "trial trains counting 0; so fewer slots sit idle at the end) or grid (the preset's order); "
                        "orchestrator/schedule.py")
    g.add_argument("--resume", action="store_true", help="continue the interrupted grid with the same flags: "
                                                         "finished trials are skipped, the MLflow parent run reused")
    g.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0: a line per trial and the summary; 1: plus a live progress view; 2: plus Ray Tune's "
                        "own tables and every Ray/MLflow log message (below 2 those go to <storage>/logs/)")
    g = p.add_argument_group("resources")
    g.add_argument("--ray-address", default=None, help="connect to a running Ray cluster, e.g. 'auto' on a "
                                                       "cluster head (default: env RAY_ADDRESS, else start a local one)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray instance (default: all)")
    g.add_argument("--num-gpus", type=int, default=None, help="GPUs for the local Ray instance (default: all)")
    g.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what fits)")
    g.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="0 = CPU; a fraction (0.25) packs trials on a GPU; N > 1 = N DDP workers, one GPU each")
    g.add_argument("--executor", default="auto", choices=["auto", "direct", "train"],
                   help="direct: the trial runs in its Tune function, one reused process for trial after trial (least "
                        "start-up); train: each trial is a Ray Train TorchTrainer (DDP over several workers/GPUs); "
                        "auto: direct for one-worker trials, train for several")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="what trials compute on: auto = cuda when a trial holds a GPU, else cpu; cpu forces the CPU "
                        "(a simulated cluster's fake GPUs). A GPU that torch cannot use fails the trial in one line")
    g.add_argument("--pending-timeout", type=float, default=None, metavar="SECONDS",
                   help="fail the grid when trials wait this long for resources while none runs (an autoscaler "
                        "that cannot provide the node type); default: wait")
    g.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (CPU DDP)")
    g.add_argument("--cpus-per-worker", type=float, default=None, help="CPU per Ray Train worker (default: the "
                                                                      "CPUs shared among concurrent trials)")
    g.add_argument("--max-failures", type=int, default=2, help="worker failures a trial survives by resuming "
                                                               "from its last checkpoint")
    return p


def overrides_from_args(args: argparse.Namespace):
    """The parsed flags as a plan.Overrides (one field per flag)."""
    from orchestrator.plan import Overrides   # torch (plan -> contract): not for --help or a bad flag

    def tup(v):
        return tuple(v) if v is not None else None

    return Overrides(
        benchmarks=tup(args.benchmark), data_dir=args.data_dir, modalities=tup(args.modalities),
        label_rule=args.label_rule, source_file=args.source_file, alignment=args.alignment, seeds=tup(args.seeds),
        set=dict(args.set or {}), grid=dict(args.grid or {}),
        synthetic=dict(args.synthetic or {}), data_options=dict(args.data_option or {}), epochs=args.epochs,
        num_samples=args.num_samples,
        seed_search=args.seed_search, tracking_uri=args.tracking_uri, experiment=args.experiment,
        report_dir=args.report_dir, storage_path=args.storage_path, resume=args.resume, verbose=args.verbose,
        # on a cluster head (run_grid.sh), RAY_ADDRESS points at the running cluster
        ray_address=args.ray_address or os.environ.get("RAY_ADDRESS") or None,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, max_concurrent=args.max_concurrent,
        gpus_per_trial=args.gpus_per_trial, executor=args.executor, workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker, max_failures=args.max_failures, device=args.device,
        pending_timeout_s=args.pending_timeout, stage_cache=not args.no_stage_cache,
        order=args.order)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        print(f"error: --max-concurrent {args.max_concurrent}: at least 1 trial at once (leave it out for as "
              "many as fit)", file=sys.stderr)
        return 2
    with user_errors():
        # torch and Ray (plan, grid): loaded once the flags parse, not for --help or a bad flag
        from orchestrator.grid import run
        from orchestrator.plan import make_plan

        plan = make_plan(load_preset(args.preset), overrides_from_args(args))
        with console.session(args.verbose, console.driver_log_path(args.storage_path)):
            return run(plan).exit_code
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Validate a Ray cluster file before `ray up` / `kubectl apply` sees it.

    python -m orchestrator.check_cluster clusters/gpu.yaml
    python -m orchestrator.check_cluster clusters/gpu.yaml --gpus-per-trial 0.25   # + the trial plan

Launcher files (gpu.yaml, local.yaml) are checked against Ray's own JSON schema
(ray/autoscaler/ray-schema.json) and by the prepare/validate pair `ray up` calls; a KubeRay
RayJob (``kind: RayJob``) against RAYJOB_SCHEMA (Ray ships none for it). Exit 0 and one "ok"
line, or exit 2 and one line on stderr starting with "error:" that names the file and the fix.
tests/clusters/test_cluster_configs.py uses the same functions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from orchestrator.resources import TrialRequest, check_request, shape_from_cluster_config

RAYJOB_KIND = "RayJob"


def ray_schema_path() -> Path:
    return Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


# Ray ships no schema for the RayJob custom resource: this one pins what our file relies on.
GPU_LIMITS_SCHEMA = {
    "type": "object",
    "required": ["nvidia.com/gpu"],
    "properties": {"nvidia.com/gpu": {"type": ["string", "integer"], "pattern": "^[1-9][0-9]*$"}},
}
CONTAINER_SCHEMA = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {"name": {"type": "string"}, "image": {"type": "string", "minLength": 1}},
}


def pod_template_schema(container_schema: dict) -> dict:
    """A pod template whose spec holds one or more containers, each matching container_schema."""
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["containers"],
                "properties": {"containers": {"type": "array", "minItems": 1, "items": container_schema}},
            }
        },
    }


POD_TEMPLATE_SCHEMA = pod_template_schema(CONTAINER_SCHEMA)
GPU_POD_TEMPLATE_SCHEMA = pod_template_schema({
    "allOf": [
        CONTAINER_SCHEMA,
        {
            "type": "object",
            "required": ["resources"],
            "properties": {
                "resources": {"type": "object", "required": ["limits"], "properties": {"limits": GPU_LIMITS_SCHEMA}},
            },
        },
    ]
})

RAYJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "properties": {
                "entrypoint": {"type": "string", "pattern": "run_grid\\.py"},
                "runtimeEnvYAML": {"type": "string"},
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec", "workerGroupSpecs"],
                    "properties": {
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "properties": {"template": POD_TEMPLATE_SCHEMA},
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["groupName", "replicas", "rayStartParams", "template"],
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "template": GPU_POD_TEMPLATE_SCHEMA,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


class ClusterConfigError(ValueError):
    """A cluster file that `ray up` (or KubeRay) would reject. One line naming the fix."""


def validate_launcher_config(config: dict) -> None:
    """What `ray up` does to a launcher file: Ray's JSON schema, then prepare + validate.
    Raises jsonschema.ValidationError or ValueError as Ray does."""
    jsonschema.validate(config, json.loads(ray_schema_path().read_text()))
    validate_config(prepare_config(config))


def validate_rayjob(config: dict) -> None:
    jsonschema.validate(config, RAYJOB_SCHEMA)


def check_file(path: str | Path) -> str:
    """Load and validate one cluster file; return its kind ('launcher' or 'RayJob').
    Raises ClusterConfigError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ClusterConfigError(f"{path}: cannot read ({err.strerror}); pass an existing cluster YAML file") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ClusterConfigError(f"{path}: not valid YAML{where} ({problem}); fix the syntax "
                                 "(unclosed brackets or quotes, tabs, bad indentation)") from None
    if not isinstance(config, dict) or not config:
        raise ClusterConfigError(f"{path}: expected a mapping of cluster settings, got "
                                 f"{type(config).__name__}; see clusters/gpu.yaml for the layout")
    kind = RAYJOB_KIND if config.get("kind") == RAYJOB_KIND else "launcher"
    try:
        if kind == RAYJOB_KIND:
            validate_rayjob(config)
        else:
            validate_launcher_config(config)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        msg = " ".join(str(err.message).split())[:300]
        raise ClusterConfigError(f"{path}: {where}: {msg}; fix that field (schema: "
                                 f"{'RAYJOB_SCHEMA' if kind == RAYJOB_KIND else 'ray-schema.json'})") from None
    except (ValueError, KeyError, TypeError) as err:
        msg = " ".join(str(err).split())[:300]
        raise ClusterConfigError(f"{path}: rejected by Ray's config validation ({msg}); fix the file") from None
    return kind


def plan_for_file(path: str | Path, args) -> str:
    """How run_grid.py would plan its trials on the cluster a launcher file describes, from its
    node types (before any node exists): the grid's own plan_execution on that shape.
    Raises ClusterConfigError when no node type could ever hold a trial."""
    from orchestrator.plan import GridError, ResourceRequest, plan_execution   # torch: only when trials are planned

    shape = shape_from_cluster_config(yaml.safe_load(Path(path).read_text()), str(path))
    try:
        ex = plan_execution(ResourceRequest(args.executor, args.gpus_per_trial, args.workers_per_trial,
                                            args.cpus_per_worker, None, 0, "unused", None, None, None), shape)
    except GridError as err:
        raise ClusterConfigError(f"{path}: {err}") from None
    note = check_request(shape, TrialRequest(ex.workers_per_trial, ex.cpus_per_worker, ex.gpus_per_worker)).note
    gpu = f", GPU: {ex.gpus_per_worker:g}" if ex.gpus_per_worker else ""
    return (f"plan: {ex.workers_per_trial} worker(s) x {{CPU: {ex.cpus_per_worker:g}{gpu}}} per trial, at most "
            f"{ex.max_concurrent} trial(s) at once on {shape.describe()}" + (f"; {note}" if note else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.check_cluster",
                                     description="Validate Ray cluster files (launcher YAML or KubeRay RayJob); "
                                                 "with a trial size, also plan the trials from the node types.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    plan = parser.add_argument_group("plan trials as run_grid.py would (launcher files)")
    plan.add_argument("--gpus-per-trial", type=float, default=None)
    plan.add_argument("--workers-per-trial", type=int, default=1)
    plan.add_argument("--cpus-per-worker", type=float, default=None)
    plan.add_argument("--executor", default="auto", choices=["auto", "train", "direct"])
    args = parser.parse_args(argv)
    want_plan = args.gpus_per_trial is not None or args.workers_per_trial != 1 or args.cpus_per_worker
    trial = argparse.Namespace(gpus_per_trial=args.gpus_per_trial or 0.0, workers_per_trial=args.workers_per_trial,
                               cpus_per_worker=args.cpus_per_worker, executor=args.executor, max_concurrent=None,
                               storage_path="unused", max_failures=0)
    for f in args.files:
        try:
            kind = check_file(f)
            planned = plan_for_file(f, trial) if want_plan and kind == "launcher" else ""
        except ClusterConfigError as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
            return 2
        print(f"ok: {f} ({kind})" + (f"; {planned}" if planned else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

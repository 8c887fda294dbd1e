"""What a trial asks of a Ray cluster, and whether the cluster can ever give it.

Planning against `ray.cluster_resources()` at start is wrong on an autoscaling cluster:
clusters/gpu.yaml starts with a CPU head and no GPU node (`min_workers: 0`), so a GPU grid would
be refused before the autoscaler had a chance to start a node, and a CPU share derived from the
live total counts the head's CPUs. Here the plan comes from the node *types* the cluster can
provide (the autoscaler's config), a trial asks for a fixed bundle per worker, Tune queues the
trials and the autoscaler starts nodes for them. A grid is refused only when no node type could
ever hold a trial (`check_request`), or, once running, when trials wait for resources while
nothing runs for longer than a stated time (`PendingWatchdog`).

Where the node types come from (`discover_shape`, on a connected Ray):
  1. the config file the cluster's autoscaler runs with (`ray up` and Ray's simulated cluster
     start the head's monitor with `--autoscaling-config=FILE`; the driver runs on the head);
  2. the cluster config the autoscaler reports to the GCS (`ray._private.state.state.
     get_cluster_config()`; empty with Ray 2.60's launcher autoscalers, seen here with v1 on the
     simulated cluster and v2 on `ray up clusters/local.yaml`);
  3. the live nodes (a local Ray: what exists is all there is; or a cluster whose node types are
     unknown here, e.g. the SSH provider's config, which states no resources: then the shape is
     marked incomplete and nothing is refused).
A cluster file on disk can be read the same way (`shape_from_cluster_config`).

Pure: no Ray import at module level; only `discover_shape` and `pending_watchdog_callback` import it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Iterable, Mapping

TUNE_FUNCTION_CPUS = 0.01   # the Train executor's Tune function only drives a TorchTrainer
DEFAULT_CPUS_PER_WORKER = 1.0   # a CPU trial's worker (torch runs one thread per CPU it holds)
DEFAULT_PENDING_TIMEOUT_S = 1800.0   # a cloud node takes minutes to boot and install; 30 min is clearly stuck
UNBOUNDED = 1_000_000       # max_count of a node type with no limit (-1 in the GCS config)
_EPS = 1e-9


class ResourceError(RuntimeError):
    """A trial that no node of the cluster can ever hold, or trials stuck waiting. One line
    naming the fix (grid.py turns it into a GridError)."""


@dataclasses.dataclass(frozen=True)
class NodeType:
    """One kind of node the cluster has or can start.

    Args:
        name: the node type's name (available_node_types key), or a live node's id.
        resources: {"CPU": 4, "GPU": 1, ...}; None when the file leaves them to the provider
            (`resources: {}` on AWS: filled in from the instance type at launch).
        max_count: how many nodes of this type the cluster can hold (the head: 1).
        is_head: the head node type (always running).
    """

    name: str
    resources: Mapping[str, float] | None
    max_count: int
    is_head: bool = False

    def fits(self, bundle: Mapping[str, float]) -> int:
        """How many copies of `bundle` one node of this type holds (0 if unknown)."""
        if self.resources is None:
            return 0
        counts = [math.floor(self.resources.get(key, 0.0) / amount + _EPS)
                  for key, amount in bundle.items() if amount > 0]
        return min(counts) if counts else UNBOUNDED

    def describe(self) -> str:
        res = "resources set at launch" if self.resources is None else _fmt(self.resources)
        count = "head" if self.is_head else f"max {self.max_count}" if self.max_count < UNBOUNDED else "no max"
        return f"{self.name} ({res}, {count})"


@dataclasses.dataclass(frozen=True)
class ClusterShape:
    """The node types a cluster can provide.

    Args:
        node_types: every node type, the head's included.
        max_workers: the cluster's cap on worker nodes of all types together (None: no cap).
        source: where the types were read (shown in messages).
        complete: False when other node types may exist than those listed (the live nodes of a
            cluster whose autoscaler config could not be read): then nothing is refused.
    """

    node_types: tuple[NodeType, ...]
    max_workers: int | None = None
    source: str = ""
    complete: bool = True

    @property
    def unknown(self) -> tuple[NodeType, ...]:
        """Types whose resources are set only at launch (no decision can be made about them)."""
        return tuple(t for t in self.node_types if t.resources is None and t.max_count > 0)

    def unknown_note(self) -> str:
        """Why a request that the known types cannot hold is not refused ("" if it would be)."""
        if self.unknown:
            return (f"node type(s) {', '.join(t.name for t in self.unknown)} get their resources at launch: "
                    "not checked before the grid starts")
        if not self.complete:
            return (f"only {self.source} are known, and the cluster may start other nodes: not checked "
                    "before the grid starts")
        return ""

    def describe(self) -> str:
        types = "; ".join(t.describe() for t in self.node_types) or "no node types"
        cap = f"; at most {self.max_workers} worker nodes" if self.max_workers is not None else ""
        return f"{types}{cap} (from {self.source or 'unknown'})"


@dataclasses.dataclass(frozen=True)
class TrialRequest:
    """What one trial asks for: `workers` bundles of {CPU, GPU}, plus the Tune function's own CPU.

    Args:
        workers: Ray Train workers (1, or N for DDP).
        cpus_per_worker: fixed CPU per worker (never a share of the live cluster's total).
        gpus_per_worker: GPU per worker; a fraction packs several trials on one GPU.
        driver_cpus: the Tune function's CPU when it is a separate bundle (Train executor).
    """

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float = 0.0
    driver_cpus: float = 0.0

    def worker_bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker > 0:
            bundle["GPU"] = self.gpus_per_worker
        return bundle

    def packing_bundle(self) -> dict[str, float]:
        """A worker's bundle with its part of the Tune function's CPU: what counting trials per
        node must reserve (the function can land on any node, so this is conservative)."""
        bundle = self.worker_bundle()
        bundle["CPU"] += self.driver_cpus / self.workers
        return bundle

    def describe(self) -> str:
        return f"{self.workers} worker(s) x {_fmt(self.worker_bundle())}"


@dataclasses.dataclass(frozen=True)
class Fit:
    """check_request's answer for a request that can be placed (or cannot be judged).

    Args:
        hosts: names of the node types that can hold a worker.
        capacity: workers of this request the cluster holds at its largest (known types only).
        concurrent: trials that can run at once at the cluster's largest (>= 1).
        note: why the request was not judged (ClusterShape.unknown_note), else "".
    """

    hosts: tuple[str, ...]
    capacity: int
    concurrent: int
    note: str = ""


# ----------------------------------------------------------------------------- shapes

def shape_from_cluster_config(config: Mapping, source: str = "cluster config") -> ClusterShape:
    """Node types of a Ray cluster launcher config (a clusters/*.yaml, or the bootstrap config the
    head's autoscaler runs with). A type's `max_workers` defaults to the cluster's, as in Ray."""
    node_types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cluster_max = config.get("max_workers")
    types = []
    for name, node in node_types.items():
        raw = node.get("resources")
        resources = {k: float(v) for k, v in raw.items()} if raw else None
        if name == head:
            types.append(NodeType(name, resources, 1, is_head=True))
        else:
            count = node.get("max_workers", cluster_max if cluster_max is not None else 2)
            types.append(NodeType(name, resources, int(count)))
    return ClusterShape(tuple(types), None if cluster_max is None else int(cluster_max), source)


def shape_from_nodes(nodes: Iterable[Mapping], source: str = "live nodes") -> ClusterShape:
    """One fixed node type per alive node of `ray.nodes()` (nothing more will appear)."""
    types = []
    for node in nodes:
        if not node.get("Alive", True):
            continue
        resources = {k: float(v) for k, v in (node.get("Resources") or {}).items()}
        is_head = "node:__internal_head__" in resources
        types.append(NodeType(str(node.get("NodeID", "node"))[:12], resources, 1, is_head=is_head))
    return ClusterShape(tuple(types), None, source)


def shape_from_totals(resources: Mapping[str, float], source: str = "cluster resources") -> ClusterShape:
    """A single node holding `resources` (e.g. `ray.cluster_resources()` of a local Ray)."""
    return ClusterShape((NodeType("local", {k: float(v) for k, v in resources.items()}, 1, is_head=True),),
                        None, source)


def shape_from_gcs_config(cluster_config, head: NodeType | None) -> ClusterShape:
    """From the autoscaler's ClusterConfig protobuf (node_group_configs), plus the live head."""
    types = [NodeType(group.name, {k: float(v) for k, v in group.resources.items()},
                      UNBOUNDED if group.max_count < 0 else int(group.max_count))
             for group in cluster_config.node_group_configs]
    if head is not None:
        types.insert(0, head)
    return ClusterShape(tuple(types), None, "the autoscaler's config in the GCS")


def autoscaler_config_path(gcs_address: str) -> str | None:
    """The `--autoscaling-config` file of the autoscaler (monitor) of the cluster at
    `gcs_address`, when that monitor runs on this machine; None otherwise."""
    import ray  # noqa: F401 - puts the psutil that Ray vendors on sys.path
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if not any(arg.endswith("monitor.py") for arg in cmd[:4]):
            continue
        if f"--gcs-address={gcs_address}" not in cmd:
            continue
        for index, arg in enumerate(cmd):
            if arg.startswith("--autoscaling-config="):
                return os.path.expanduser(arg.split("=", 1)[1])
            if arg == "--autoscaling-config" and index + 1 < len(cmd):
                return os.path.expanduser(cmd[index + 1])
    return None


def discover_shape(started_here: bool = False) -> ClusterShape:
    """The node types of the Ray cluster this process is connected to (see the module docstring
    for the order in which they are looked for).

    Args:
        started_here: this process started the Ray instance (a local Ray): its live nodes are all
            there will be. Otherwise, when no autoscaler config is found, the live nodes are
            marked incomplete (the cluster may have an autoscaler this process cannot read).
    """
    import ray   # Ray and YAML: planning (orchestrator.plan) imports this module without them
    import yaml

    nodes = ray.nodes()
    path = autoscaler_config_path(ray.get_runtime_context().gcs_address)
    why = "no autoscaler config found"
    if path and os.path.exists(path):
        with open(path) as f:
            config = yaml.safe_load(f)    # JSON is YAML: the simulated cluster writes JSON
        shape = shape_from_cluster_config(config, f"the autoscaler's config {path}")
        if shape.node_types and not all(t.resources is None for t in shape.node_types):
            return shape
        # the local (SSH) provider's config states no resources: its machines report them
        why = f"the autoscaler's config {path} states no resources"
    try:
        from ray._private.state import state   # as above
        gcs_config = state.get_cluster_config()
    except Exception:   # a private API: its absence must not stop a grid
        gcs_config = None
    if gcs_config is not None and gcs_config.node_group_configs:
        heads = [t for t in shape_from_nodes(nodes).node_types if t.is_head]
        return shape_from_gcs_config(gcs_config, heads[0] if heads else None)
    live = shape_from_nodes(nodes, "the live nodes" if started_here else f"the live nodes ({why})")
    return live if started_here else dataclasses.replace(live, complete=False)


# ----------------------------------------------------------------------------- planning

def default_cpus_per_worker(shape: ClusterShape, gpus_per_worker: float, driver_cpus: float = 0.0) -> float:
    """A worker's fixed CPU when the user gives none.

    CPU trials: DEFAULT_CPUS_PER_WORKER (less the Tune function's sliver). GPU trials: the CPUs
    that come with the GPU share on the smallest-CPU-per-GPU node type that holds it (a quarter
    of a 4-CPU, 1-GPU g5.xlarge -> 1 CPU), so CPU never stops trials from packing by GPU. Never
    derived from the live cluster's total (which counts the head's CPUs).
    """
    if gpus_per_worker <= 0:
        return round(DEFAULT_CPUS_PER_WORKER - driver_cpus, 2)
    shares = []
    for t in shape.node_types:
        if t.resources is None or t.max_count < 1:
            continue
        cpus, gpus = t.resources.get("CPU", 0.0), t.resources.get("GPU", 0.0)
        if gpus + _EPS >= gpus_per_worker and cpus > 0:
            shares.append(cpus * min(1.0, gpus_per_worker / gpus) - driver_cpus)
    if not shares:
        return round(DEFAULT_CPUS_PER_WORKER - driver_cpus, 2)
    return max(0.01, math.floor(min(shares) * 100 + _EPS) / 100)


def worker_capacity(shape: ClusterShape, bundle: Mapping[str, float]) -> int:
    """How many copies of `bundle` the cluster holds at its largest (known node types only):
    the head once, then worker types fullest-first up to the cluster's worker-node cap."""
    capacity = sum(t.fits(bundle) for t in shape.node_types if t.is_head and t.resources is not None)
    workers = sorted((t for t in shape.node_types if not t.is_head and t.resources is not None),
                     key=lambda t: t.fits(bundle), reverse=True)
    nodes_left = UNBOUNDED if shape.max_workers is None else shape.max_workers
    for t in workers:
        take = min(t.max_count, nodes_left)
        capacity += take * t.fits(bundle)
        nodes_left -= take
    return min(capacity, UNBOUNDED)


def check_request(shape: ClusterShape, request: TrialRequest) -> Fit:
    """Whether the cluster can ever hold one trial of `request`; how many at once at its largest.

    Returns:
        a Fit. When the known node types cannot hold the trial but the shape is partial (types
        whose resources are set at launch, or live nodes of a cluster that may grow), a Fit with
        a note instead of an error: nothing can be decided, PendingWatchdog catches a real stall.
    Raises:
        ResourceError: no node type holds a worker, or all of them together cannot hold the
            trial's workers at once (or the Tune function's CPU).
    """
    if request.workers < 1:
        raise ResourceError(f"a trial needs at least 1 worker, got {request.workers}; set --workers-per-trial 1")
    bundle = request.worker_bundle()
    hosts = tuple(t.name for t in shape.node_types if t.max_count > 0 and t.fits(bundle) >= 1)
    capacity = worker_capacity(shape, bundle)
    note = shape.unknown_note()
    if not hosts or capacity < request.workers:
        if note:
            return Fit(hosts, capacity, max(1, capacity // request.workers), note)
        if not hosts:
            raise ResourceError(
                f"a trial worker needs {_fmt(bundle)} but no node type of the cluster has that much: "
                f"{shape.describe()}; lower --gpus-per-trial / --cpus-per-worker, or add a node type with "
                f"at least {_fmt(bundle)} to available_node_types in the cluster file")
        raise ResourceError(
            f"a trial needs {request.describe()} at once, but the cluster holds at most {capacity} such "
            f"worker(s): {shape.describe()}; lower --workers-per-trial (or --gpus-per-trial above 1), or raise "
            "the max_workers of a node type in the cluster file")
    if request.driver_cpus > 0:
        driver = {"CPU": request.driver_cpus}
        if not any(t.max_count > 0 and t.fits(driver) >= 1 for t in shape.node_types) and not note:
            raise ResourceError(f"the trial's Tune function needs {_fmt(driver)} but no node type has any CPU: "
                                f"{shape.describe()}; give the head or a worker type some CPU")
    concurrent = max(1, worker_capacity(shape, request.packing_bundle()) // request.workers)
    return Fit(hosts, capacity, concurrent, "")


# ----------------------------------------------------------------------------- watchdog

class PendingWatchdog:
    """Fails a grid whose trials wait for resources while no trial runs, for longer than `timeout_s`.

    Trials legitimately wait while others run (a queue longer than the cluster), and at the start
    while the autoscaler boots nodes. Stuck is: some trial waits and none has been running (holding
    resources and reporting results) for `timeout_s`: the cluster never provided what they ask for
    (no quota or capacity for the node type, a node whose setup fails, a type removed from the file).

    A trial waits when it is PENDING, or RUNNING without any result yet (the Train executor's Tune
    function runs on a CPU while its worker group waits for the GPUs). So a first epoch longer than
    `timeout_s` with nothing else running also trips it: keep `timeout_s` well above one epoch.

    Args:
        timeout_s: how long trials may wait with nothing running.
        request: the trial request, named in the message.
        clock: seconds (time.monotonic); replaceable in tests.
    """

    def __init__(self, timeout_s: float = DEFAULT_PENDING_TIMEOUT_S, request: TrialRequest | None = None,
                 clock=time.monotonic):
        if not timeout_s > 0:
            raise ResourceError(f"the pending timeout must be > 0 seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.request = request
        self.clock = clock
        self.idle_since: float | None = None

    def observe(self, trials: Iterable[tuple[str, bool]], now: float | None = None) -> None:
        """Look at every trial once (Tune calls this each step).

        Args:
            trials: (status, has_result) per trial: Tune's Trial.status (PENDING, RUNNING, PAUSED,
                TERMINATED, ERROR) and whether it has reported anything yet.
            now: the time (default: the clock).
        Raises:
            ResourceError: trials have waited `timeout_s` with none running.
        """
        now = self.clock() if now is None else now
        waiting = running = 0
        for status, has_result in trials:
            if status == "PENDING" or (status == "RUNNING" and not has_result):
                waiting += 1
            elif status == "RUNNING":
                running += 1
        if running or not waiting:
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since > self.timeout_s:
            what = f" ({self.request.describe()} each)" if self.request else ""
            raise ResourceError(
                f"{waiting} trial(s){what} waited {now - self.idle_since:.0f} s for resources with no trial "
                "running: the cluster never provided them; see `ray status` and the autoscaler log "
                "(/tmp/ray/session_latest/logs/monitor.*) for nodes that did not start (quota, capacity, "
                "setup errors), or allow longer with a larger pending timeout")


def pending_watchdog_callback(timeout_s: float = DEFAULT_PENDING_TIMEOUT_S, request: TrialRequest | None = None):
    """A Ray Tune callback running PendingWatchdog at every step of the Tune loop; its
    ResourceError ends `Tuner.fit()`. (Built on call: this module does not import Ray.)"""
    from ray.tune import Callback   # Ray: see the docstring

    class PendingWatchdogCallback(Callback):
        def __init__(self):
            self.watchdog = PendingWatchdog(timeout_s, request)

        def on_step_begin(self, iteration, trials, **info):
            self.watchdog.observe((t.status, bool(t.last_result)) for t in trials)

    return PendingWatchdogCallback()


def _fmt(resources: Mapping[str, float]) -> str:
    """{"CPU": 2.0, "GPU": 0.5, "memory": ...} -> "{CPU: 2, GPU: 0.5}" (CPU/GPU/custom; no memory
    or node: entries)."""
    keep = {k: v for k, v in resources.items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(keep.items())) + "}"

"""Helpers of the simulated-cluster tests (see conftest.py): the cluster, a watcher, node lookup."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import defaultdict

import ray  # noqa: F401 - puts the psutil that Ray vendors on sys.path
import psutil

HEAD_TYPE = "ray.head.default"
ALLOW_ENV = "S3_ALLOW_RAY_STOP"
RAY_DAEMONS = ("raylet", "gcs_server")


def simulated_cluster_class():
    from ray.cluster_utils import AutoscalingCluster

    class SimulatedCluster(AutoscalingCluster):
        """AutoscalingCluster whose config is built here, not from the missing example.yaml."""

        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
            if autoscaler_v2:
                raise ValueError("SimulatedCluster builds an autoscaler v1 config only")
            node_types = {name: dict(node) for name, node in worker_node_types.items()}
            node_types[HEAD_TYPE] = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
            config = {
                "cluster_name": "s3-simulated",
                "max_workers": sum(node["max_workers"] for node in worker_node_types.values()),
                "upscaling_speed": 1.0,
                "idle_timeout_minutes": 0.1,
                "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                             "disable_node_updaters": True, "disable_launch_config_check": True},
                "auth": {"ssh_user": "ray"},
                "available_node_types": node_types,
                "head_node_type": HEAD_TYPE,
                "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
                "rsync_exclude": [], "rsync_filter": [],
                "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
                "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            }
            config.update(config_kwargs)
            return config

    return SimulatedCluster


def other_ray_processes() -> list[str]:
    """Ray daemons running on this machine (as far as this PID namespace sees)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        exe = os.path.basename(cmd[0]) if cmd else ""
        if proc.info.get("name") in RAY_DAEMONS or exe in RAY_DAEMONS:
            found.append(f"{proc.pid} {exe or proc.info.get('name')}")
    return found


class ClusterWatcher(threading.Thread):
    """Samples the cluster every `interval` s from a background thread, once the grid (in the main
    thread: Tune installs signal handlers) has connected: alive nodes with their resources, and
    the alive actors of Tune trials with the node each runs on.

    Attributes:
        samples: [(t, {node_id: resources}, {node_id: [trial actor ids]})], t from the start.
        errors: exceptions of the sampling (the state API can fail while nodes come and go).
    """

    TRIAL_ACTOR_MARKS = ("ImplicitFunc", "tune_trial")

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, dict, dict]] = []
        self.errors: list[str] = []
        self.class_names: set[str] = set()
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self):
        import ray
        from ray._private import state   # the GCS actor table: no dashboard needed

        if not ray.is_initialized():     # the grid connects with its own ray.init
            return
        nodes = {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n["Alive"]}
        trials = defaultdict(list)
        for actor_id, actor in state.actors().items():
            self.class_names.add(actor["ActorClassName"])
            if actor["State"] == "ALIVE" and any(m in actor["ActorClassName"] for m in self.TRIAL_ACTOR_MARKS):
                trials[actor["Address"]["NodeID"]].append(actor_id)
        self.samples.append((time.monotonic() - self.t0, nodes, dict(trials)))

    def run(self):
        while not self._halt.is_set():
            try:
                self.sample()
            except Exception as err:   # noqa: BLE001 - recorded, shown by the test on failure
                self.errors.append(f"{type(err).__name__}: {err}")
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=30)

    # ---- what the samples say

    def gpu_nodes(self, sample) -> set[str]:
        return {node for node, res in sample[1].items() if res.get("GPU", 0) > 0}

    def max_gpu_nodes(self) -> int:
        return max((len(self.gpu_nodes(s)) for s in self.samples), default=0)

    def max_trials_on_one_node(self) -> int:
        return max((len(actors) for s in self.samples for actors in s[2].values()), default=0)

    def trial_nodes(self) -> set[str]:
        return {node for s in self.samples for node in s[2]}

    def first_time(self, predicate) -> float | None:
        return next((s[0] for s in self.samples if predicate(s)), None)

    def summary(self) -> str:
        return (f"{len(self.samples)} samples, max GPU nodes {self.max_gpu_nodes()}, max trials on one node "
                f"{self.max_trials_on_one_node()}, actor classes {sorted(self.class_names)}, "
                f"errors {self.errors[-3:]}")


def kill_node(raylet: psutil.Process) -> int:
    """SIGKILL a simulated node as a machine dies: its raylet and every process under it (the
    trial's worker processes) at once. Killing the raylet alone leaves its workers running for a
    while as orphans, which can finish a trial (and write its checkpoints) after its node "died".
    Returns how many processes were killed."""
    victims = [raylet]
    with contextlib.suppress(psutil.NoSuchProcess):
        victims += raylet.children(recursive=True)
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    return len(victims)


def raylet_of(node_id: str) -> psutil.Process | None:
    """The raylet process of a node of the simulated cluster (every node runs on this machine)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if cmd and os.path.basename(cmd[0]) == "raylet" and f"--node_id={node_id}" in cmd:
            return proc
    return None

"""orchestrator.resources: planning from the node types a cluster can provide, with fake types."""
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.resources import (ClusterShape, NodeType, PendingWatchdog, ResourceError, TrialRequest,
                                    check_request, default_cpus_per_worker, shape_from_cluster_config,
                                    shape_from_nodes, shape_from_totals, worker_capacity)

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"

# The simulated cluster of the autoscaling tests: a CPU head, GPU workers that start at zero.
HEAD = NodeType("head", {"CPU": 2.0}, 1, is_head=True)
GPU_WORKER = NodeType("gpu", {"CPU": 2.0, "GPU": 1.0}, 2)
SIMULATED = ClusterShape((HEAD, GPU_WORKER), max_workers=2, source="test")


def test_gpu_trials_fit_a_cluster_that_has_no_gpu_node_yet():
    # Today's check read ray.cluster_resources(): 0 GPU at start, so the grid was refused.
    cpus = default_cpus_per_worker(SIMULATED, 0.5)
    assert cpus == 1.0                       # half of the GPU node's 2 CPUs: two trials per node
    fit = check_request(SIMULATED, TrialRequest(1, cpus, 0.5))
    assert fit.hosts == ("gpu",) and fit.capacity == 4 and fit.concurrent == 4 and fit.note == ""


def test_cpu_share_is_fixed_not_the_live_total():
    # The live total of a head (8 CPU) plus one g5.xlarge (4 CPU, 1 GPU) is 12 CPU: today's plan
    # gave each of four 0.25-GPU trials 2.99 CPU, so only one fit on the 4-CPU worker.
    shape = ClusterShape((NodeType("head", {"CPU": 8.0}, 1, True), NodeType("g5", {"CPU": 4.0, "GPU": 1.0}, 4)),
                         4)
    for driver in (0.0, 0.01):
        cpus = default_cpus_per_worker(shape, 0.25, driver)
        assert cpus == pytest.approx(1.0 - driver)
        request = TrialRequest(1, cpus, 0.25, driver)
        assert per_node(shape.node_types[1], request) == 4
        assert check_request(shape, request).concurrent == 16
    # more workers (the autoscaler adds nodes) never changes a trial's CPU
    bigger = dataclass_replace(shape, node_types=(shape.node_types[0], NodeType("g5", {"CPU": 4.0, "GPU": 1.0}, 40)))
    assert default_cpus_per_worker(bigger, 0.25) == default_cpus_per_worker(shape, 0.25)
    assert default_cpus_per_worker(shape, 0.0) == 1.0 and default_cpus_per_worker(shape, 0.0, 0.01) == 0.99


def test_cpu_share_follows_the_tightest_gpu_node_type():
    shape = ClusterShape((HEAD, NodeType("g5.2x", {"CPU": 8.0, "GPU": 1.0}, 2),
                          NodeType("p4d", {"CPU": 96.0, "GPU": 8.0}, 1)))
    assert default_cpus_per_worker(shape, 1.0) == 8.0      # 12 per GPU on p4d, 8 on g5.2xlarge
    assert default_cpus_per_worker(shape, 0.25) == 2.0
    assert default_cpus_per_worker(shape, 4.0) == 48.0     # only p4d has 4 GPUs


def test_never_fits_names_the_fix():
    with pytest.raises(ResourceError, match="no node type of the cluster has that much.*lower --gpus-per-trial"):
        check_request(SIMULATED, TrialRequest(1, 1.0, 2.0))
    with pytest.raises(ResourceError, match="add a node type"):
        check_request(SIMULATED, TrialRequest(1, 3.0, 0.5))       # 3 CPU: more than any node has
    # four 1-GPU DDP workers: each fits a node, but the cluster has at most 2 GPU nodes
    with pytest.raises(ResourceError, match="holds at most 2 such worker.*--workers-per-trial") as err:
        check_request(SIMULATED, TrialRequest(4, 1.0, 1.0))
    assert "\n" not in str(err.value)
    assert check_request(SIMULATED, TrialRequest(2, 1.0, 1.0)).concurrent == 1


def test_global_worker_cap_limits_capacity():
    shape = ClusterShape((HEAD, NodeType("a", {"CPU": 2.0, "GPU": 1.0}, 4), NodeType("b", {"CPU": 8.0, "GPU": 4.0}, 4)),
                         max_workers=2)
    bundle = {"CPU": 1.0, "GPU": 1.0}
    assert worker_capacity(shape, bundle) == 8     # two of the 4-GPU type, fullest first
    assert worker_capacity(dataclass_replace(shape, max_workers=None), bundle) == 20
    with pytest.raises(ResourceError):
        check_request(shape, TrialRequest(9, 1.0, 1.0))


def test_cpu_trials_count_the_head():
    fit = check_request(SIMULATED, TrialRequest(1, 0.99, 0.0, 0.01))
    assert fit.capacity == 2 + 2 * 2 and fit.concurrent == 6
    assert check_request(shape_from_totals({"CPU": 2.0}), TrialRequest(1, 0.99, 0.0, 0.01)).concurrent == 2


def test_resources_set_at_launch_cannot_be_judged():
    # gpu.yaml's head says `resources: {}`: AWS fills it in from the instance type at launch.
    shape = ClusterShape((NodeType("head", None, 1, True), GPU_WORKER), 2)
    fit = check_request(shape, TrialRequest(1, 4.0, 0.0))    # no known type has 4 CPU; the head might
    assert fit.capacity == 0 and "head" in fit.note
    assert check_request(shape, TrialRequest(1, 1.0, 0.5)).hosts == ("gpu",)


def test_live_nodes_of_a_cluster_that_may_grow_are_not_refused():
    # connected to a cluster whose autoscaler config this process cannot read (KubeRay's runs in
    # another container): its live nodes are not all it can have
    live = shape_from_nodes([{"NodeID": "h" * 40, "Alive": True, "Resources": {"CPU": 0.0}}])
    with pytest.raises(ResourceError):
        check_request(live, TrialRequest(1, 1.0, 1.0))
    fit = check_request(dataclass_replace(live, complete=False), TrialRequest(1, 1.0, 1.0))
    assert fit.capacity == 0 and fit.concurrent == 1 and "may start other nodes" in fit.note


def test_gpu_yaml_is_read_as_node_types():
    shape = shape_from_cluster_config(yaml.safe_load((CLUSTERS / "gpu.yaml").read_text()), "gpu.yaml")
    head = [t for t in shape.node_types if t.is_head]
    assert len(head) == 1 and head[0].max_count == 1
    gpu_types = [t for t in shape.node_types if not t.is_head and (t.resources or {}).get("GPU", 0) >= 1]
    assert gpu_types and all(t.max_count >= 1 for t in gpu_types)
    # README's packing command, --gpus-per-trial 0.25: planned from the file, before any GPU node exists
    cpus = default_cpus_per_worker(shape, 0.25, 0.01)
    fit = check_request(shape, TrialRequest(1, cpus, 0.25, 0.01))
    trials_per_node = int(1 / 0.25) * int(gpu_types[0].resources["GPU"])
    assert fit.concurrent == trials_per_node * min(gpu_types[0].max_count, shape.max_workers)


def test_type_max_workers_defaults_to_the_clusters():
    config = {"max_workers": 3, "head_node_type": "h",
              "available_node_types": {"h": {"resources": {"CPU": 1}}, "w": {"resources": {"CPU": 1, "GPU": 1}}}}
    shape = shape_from_cluster_config(config)
    assert [(t.name, t.max_count, t.is_head) for t in shape.node_types] == [("h", 1, True), ("w", 3, False)]


def test_live_nodes_are_fixed_types_and_dead_ones_are_skipped():
    nodes = [{"NodeID": "a" * 40, "Alive": True, "Resources": {"CPU": 2.0, "node:__internal_head__": 1.0}},
             {"NodeID": "b" * 40, "Alive": False, "Resources": {"CPU": 2.0, "GPU": 1.0}}]
    shape = shape_from_nodes(nodes)
    assert len(shape.node_types) == 1 and shape.node_types[0].is_head
    with pytest.raises(ResourceError, match="GPU"):
        check_request(shape, TrialRequest(1, 1.0, 0.5))


# ------------------------------------------------------------------------------ watchdog

def test_watchdog_fails_trials_waiting_with_nothing_running():
    dog = PendingWatchdog(60, TrialRequest(1, 1.0, 0.5))
    dog.observe([("PENDING", False), ("PENDING", False)], now=0)
    dog.observe([("PENDING", False), ("PENDING", False)], now=60)
    with pytest.raises(ResourceError, match=r"2 trial\(s\) \(1 worker\(s\) x \{CPU: 1, GPU: 0.5\} each\) waited 61 s") as err:
        dog.observe([("PENDING", False), ("PENDING", False)], now=61)
    assert "ray status" in str(err.value) and "\n" not in str(err.value)


def test_watchdog_queue_behind_running_trials_is_fine():
    dog = PendingWatchdog(60)
    for now in range(0, 1000, 10):     # one trial runs, 10 wait their turn for an hour: not stuck
        dog.observe([("RUNNING", True)] + [("PENDING", False)] * 10, now=now)
    # a Train trial whose Tune function runs but whose workers wait counts as waiting
    dog.observe([("RUNNING", False), ("TERMINATED", True)], now=1000)
    with pytest.raises(ResourceError):
        dog.observe([("RUNNING", False), ("TERMINATED", True)], now=1061)


def test_watchdog_clock_restarts_when_a_trial_runs_again():
    dog = PendingWatchdog(60)
    dog.observe([("PENDING", False)], now=0)
    dog.observe([("PENDING", False)], now=50)
    dog.observe([("RUNNING", True), ("PENDING", False)], now=55)   # a node came up
    dog.observe([("PENDING", False)], now=100)                     # its node was lost
    dog.observe([("PENDING", False)], now=150)                     # 50 s, not 150
    dog.observe([("TERMINATED", True)], now=500)                   # nothing waits: never stuck
    with pytest.raises(ResourceError, match="must be > 0"):
        PendingWatchdog(0)


def per_node(node: NodeType, request: TrialRequest) -> int:
    return node.fits(request.packing_bundle())


def dataclass_replace(obj, **changes):
    import dataclasses
    return dataclasses.replace(obj, **changes)


@pytest.mark.slow
def test_watchdog_callback_ends_a_tune_run_whose_trials_never_get_resources(tmp_path):
    """A real Tune run on a local Ray without GPUs: a 1-GPU trial waits forever (Tune only warns);
    the watchdog's ResourceError ends Tuner.fit() after its timeout instead."""
    import ray
    from ray import tune

    from orchestrator.resources import pending_watchdog_callback

    def trainable(config):
        tune.report({"x": 1})

    ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False)
    try:
        # without the watchdog Tune would wait forever; its time budget ends the run (no error) instead
        tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1, "gpu": 1}),
                           tune_config=tune.TuneConfig(time_budget_s=90),
                           run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0,
                                                     callbacks=[pending_watchdog_callback(5, TrialRequest(1, 1, 1))]))
        t0 = time.monotonic()
        with pytest.raises(Exception) as err:
            tuner.fit()
        waited = time.monotonic() - t0
    finally:
        ray.shutdown()
    chain = []
    e = err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, ResourceError) for x in chain), [type(x).__name__ for x in chain]
    assert 5 <= waited < 120, waited

"""The stage cache in the orchestrator, without Ray: where it lives, the trial body using it, the
FinalReport carrying what happened, and the MLflow tags made of that."""
from orchestrator import mlflow_layout as L
from orchestrator.contract import FinalReport, Report, TrialSpec, run_trial_body
from orchestrator.plan import Overrides, make_plan, stage_cache_dir
from s3core.data import SyntheticConfig, make_synthetic
from s3core.data.base import content_digest
from search_spaces import load_preset

TINY = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=32, epochs_special=1,
            epochs_select=1, eval_batch_size=64, epoch_probe=False, keep_ratios=[1.0], probe_l2=[0.01],
            probe_backend="torch")


class FakeExecutor:
    def __init__(self):
        self.reports, self.final = [], None

    def checkpoint(self):
        return None

    def report(self, report, state):
        self.reports.append(report)

    def finish(self, final, state):
        self.final = final

    def fail(self, failed, state):
        raise AssertionError(failed.reason)


def test_the_cache_lives_under_local_storage_and_the_flag_turns_it_off(tmp_path):
    preset = load_preset("smoke")
    on = make_plan(preset, Overrides(storage_path=str(tmp_path)))
    assert stage_cache_dir(on.resources) == str(tmp_path.resolve() / "stage-cache")
    assert stage_cache_dir(make_plan(preset, Overrides(storage_path=str(tmp_path), stage_cache=False)).resources) == ""
    # on a storage URI too (through pyarrow.fs), a query such as the endpoint staying last
    assert stage_cache_dir(make_plan(preset, Overrides(storage_path="s3://bucket/runs")).resources) == \
        "s3://bucket/runs/stage-cache"
    assert stage_cache_dir(make_plan(preset, Overrides(
        storage_path="s3://bucket/runs/?endpoint_override=http://127.0.0.1:9000")).resources) == \
        "s3://bucket/runs/stage-cache?endpoint_override=http://127.0.0.1:9000"


def test_the_trial_body_reuses_reports_and_tags_which_run_trained_the_stage(tmp_path):
    bench = make_synthetic(SyntheticConfig(n_train=96, n_valid=48, n_test=48, seq_len=4, dims=(6, 5), seed=3))
    execution = {"stage_cache": str(tmp_path / "stage-cache"), "data_digests": {"synthetic": content_digest(bench)},
                 "scope": "parent123"}
    first_spec = TrialSpec("synthetic", "s3", 0, "smoke", {**TINY, "lambda_suff": 1.0})
    second_spec = TrialSpec("synthetic", "s3", 0, "smoke", {**TINY, "lambda_suff": 0.5})
    first, second = FakeExecutor(), FakeExecutor()
    run_trial_body(first_spec, bench, "cpu", first, execution)
    run_trial_body(second_spec, bench, "cpu", second, execution)
    assert [(e["stage"], e["status"]) for e in first.final.stage_cache] == [("special", "trained"), ("select", "trained")]
    assert [(e["stage"], e["status"]) for e in second.final.stage_cache] == [("special", "reused"), ("select", "trained")]
    # the reused stage's epochs are still reported, one EpochReport each, at the same global epochs
    assert [(r.stage, r.global_epoch) for r in second.reports] == [(r.stage, r.global_epoch) for r in first.reports]
    # the report crosses the Ray boundary as JSON and comes back whole
    back = Report.decode(second.final.encode())
    assert isinstance(back, FinalReport) and back.stage_cache == second.final.stage_cache
    tags = L.stage_cache_tags(back.stage_cache, {first_spec.key(): "run-of-first"})
    assert tags["s3.stage_cache.special"] == "reused" and tags["s3.stage_cache.special.from"] == "run-of-first"
    assert tags["s3.stage_cache.select"] == "trained" and "s3.stage_cache.select.from" not in tags
    other_grid = L.stage_cache_tags(back.stage_cache, {})
    assert first_spec.key() in other_grid["s3.stage_cache.special.from"]
    assert "parent123" in other_grid["s3.stage_cache.special.from"]
    # without the execution's cache: nothing cached, nothing tagged
    third = FakeExecutor()
    run_trial_body(second_spec, bench, "cpu", third, None)
    assert third.final.stage_cache == []


def test_the_claim_broker_hands_a_key_to_one_holder_and_takes_it_back_when_stale(tmp_path):
    import concurrent.futures
    import time

    import torch

    from orchestrator.stage_claims import ClaimBroker, RayClaims, claims_of
    from s3core.stagecache import StageCache

    broker = ClaimBroker(stale_after_s=0.2)
    assert broker.acquire("k", "a", {}) and not broker.acquire("k", "b", {})
    broker.release("k", "b")                      # not b's to release
    assert not broker.acquire("k", "b", {})
    time.sleep(0.3)                               # a stopped refreshing: stale, b takes it over
    assert broker.acquire("k", "b", {})
    broker.refresh("k", "a")                      # a's late heartbeat does not take it back
    assert not broker.acquire("k", "a", {})
    broker.release("k", "b")
    assert broker.acquire("k", "a", {}) and broker.stats()["granted"] == 3

    # the broker as the StageCache's claims (it is what RayClaims forwards to): three claimants, one trains
    cache = StageCache(str(tmp_path), "d" * 64, code="c" * 32, poll_s=0.01, claims=ClaimBroker())

    def claimant(_):
        with cache.claim("k") as entry:
            if entry is None:            # the one that trains: slow enough for the others to wait on it
                time.sleep(0.3)
                cache.store("k", {"model": {"w": torch.ones(2)}, "history": []}, {})
            return "trained" if entry is None else "reused"

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert sorted(pool.map(claimant, range(3))) == ["reused", "reused", "trained"]
    assert not list(tmp_path.glob("*.lock")), "with a broker, no lock files"
    # a broker that cannot be reached (the driver is gone): the trial trains, it never waits
    assert claims_of("") is None
    gone = claims_of("some-namespace/s3-stage-claims-gone")
    assert isinstance(gone, RayClaims) and gone.acquire("k", "h", {}) is True

"""The console a user watches: unit tests with fake trial events, and (slow) the smoke grid's
real console at the default verbosity."""
import io
import logging
import pickle
import re
import sys
import time
from pathlib import Path

import pytest

from orchestrator import console as C
from orchestrator.progress import ProgressCallback


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeTrial:
    def __init__(self, trial_id, status, method="s3", chi=2, seed=0):
        self.trial_id = trial_id
        self.status = status
        gridded = method == "s3"     # as grid_trials makes them: only s3 is swept over chi
        self.config = {"spec": {"benchmark": "synthetic", "method": method, "seed": seed, "preset": "smoke",
                                "overrides": {"batch_size": 64, **({"chi": chi} if gridded else {})},
                                "label_fields": ["chi"] if gridded else []}}


class FakeLogger:
    """What ProgressCallback reads from MlflowTrialLogger."""

    def __init__(self, total):
        self.total, self.done, self.failed, self.started = total, 0, 0, {}


# --------------------------------------------------------------------------- text and timing

def test_plain_drops_every_control_character():
    raw = "\x1b[33m(raylet)\x1b[0m WARNING\tx\r\nbar 10%\rbar 100%\n\x07done\x1b[K"
    out = C.plain(raw)
    assert out == "(raylet) WARNING\tx\nbar 100%\ndone"
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)


def test_duration():
    assert [C.duration(s) for s in (0, 45.9, 65, 3599, 3720)] == ["0s", "45s", "1m05s", "59m59s", "1h02m"]


def test_off_a_terminal_status_lines_are_plain_and_spaced():
    out, clock = io.StringIO(), FakeClock()
    con = C.Console(out, io.StringIO(), tty=False, clock=clock)
    con.status("a 0 done", key=0, phase="grid")
    clock.t = 5
    con.status("a 1 done", key=1, phase="grid")      # changed, but too soon
    clock.t = 10
    con.status("\x1b[1ma 1 done\x1b[0m", key=1, phase="grid")
    assert out.getvalue() == "a 0 done\n"
    clock.t = 5 + C.STATUS_EVERY_S
    con.status("a 1 done", key=1, phase="grid")      # changed and due
    clock.t = 10 + C.STATUS_EVERY_S
    con.status("a 1 done", key=1, phase="grid")      # unchanged: only the heartbeat repeats it
    clock.t = 5 + C.STATUS_EVERY_S + C.HEARTBEAT_S
    con.status("a 1 done", key=1, phase="grid")
    con.status("report: reading 0/3", key="r", phase="report")   # a new phase: at once
    con.line("\x1b[33m(raylet)\x1b[0m hello\r")
    assert out.getvalue() == ("a 0 done\na 1 done\na 1 done\nreport: reading 0/3\n(raylet) hello\n")


def test_on_a_terminal_one_status_line_is_redrawn_under_the_permanent_lines():
    out, clock = FakeTTY(), FakeClock()
    con = C.Console(out, io.StringIO(), tty=True, clock=clock)
    con.status("1 running", key=1)
    con.line("[1/2] done x")
    assert out.getvalue() == "\r\x1b[K1 running\r\x1b[K[1/2] done x\n\r\x1b[K1 running"
    out.seek(0), out.truncate()
    clock.t = 0.5
    con.status("1 running 1s", key=1)       # only the clock moved: wait for the next tick
    assert out.getvalue() == ""
    clock.t = 1.0
    con.status("1 running 1s", key=1)
    con.end_status()
    assert out.getvalue() == "\r\x1b[K1 running 1s\r\x1b[K"
    out.seek(0), out.truncate()
    con.line("after")
    assert out.getvalue() == "after\n"


def test_verbose_0_has_no_live_view():
    out = io.StringIO()
    con = C.Console(out, io.StringIO(), verbose=0, tty=False)
    con.status("x")
    con.line("[1/1] done")
    assert out.getvalue() == "[1/1] done\n"


# --------------------------------------------------------------------------- the Tune callback

def test_progress_counts_names_and_time_left_from_the_logger_and_tunes_trials():
    out, clock, wall = io.StringIO(), FakeClock(), FakeClock()
    con = C.Console(out, io.StringIO(), tty=False, clock=clock)
    lg = FakeLogger(total=6)
    cb = ProgressCallback(lg, "synthetic", console=con)
    cb.wall_clock = wall
    cb.setup()
    trials = [FakeTrial("a", "RUNNING"), FakeTrial("b", "RUNNING", method="clip"), FakeTrial("c", "PENDING")]
    wall.t = 1000.0
    lg.started = {"a": 1000.0 - 65}          # the logger's start times (b has none yet)
    text, key = cb.view(trials)
    assert text == ("[synthetic] 0/6 done, 2 running, 0 failed, 4 pending | 0s elapsed, time left known after the "
                    "first trial | running: s3 synthetic chi=2 batch_size=64 seed=0 (1m05s); "
                    "clip synthetic batch_size=64 seed=0")
    # a's last result and b's error: both ran 100 s; c starts
    clock.t, wall.t = 100.0, 1035.0
    lg.started.update(b=935.0, c=1035.0)
    lg.done = 1
    cb.on_trial_result(iteration=5, trials=trials, trial=trials[0], result={"kind": "done"})
    text_a, _ = cb.view(trials)
    assert text_a.startswith("[synthetic] 1/6 done, 1 running, 0 failed, 4 pending"), "a counted once"
    lg.failed = 1
    trials[1].status, trials[2].status = "ERROR", "RUNNING"
    cb.on_trial_error(iteration=6, trials=trials, trial=trials[1])
    # left: c needs 100 s, 3 pending 100 s each, 2 at once: 200 s
    text2, key2 = cb.view(trials)
    assert text2 == ("[synthetic] 1/6 done, 1 running, 1 failed, 3 pending | 1m40s elapsed, ~3m20s left | "
                     "running: s3 synthetic chi=2 batch_size=64 seed=0 (0s)")
    assert key2 != key
    assert out.getvalue() == text2 + "\n", "the first view of a grid is printed at once"
    lg.done, wall.t = 4, 1035.0 + 90          # only c is left, 90 s into its 100
    assert "[synthetic] 4/6 done, 1 running, 1 failed, 0 pending | 1m40s elapsed, < 1m left | running:" \
        in cb.view(trials)[0]
    # off a terminal, a trial that ends is no news (its own line said it); one that starts is
    out.seek(0), out.truncate()
    clock.t = 100 + C.STATUS_EVERY_S
    lg.done, trials[2].status = 5, "TERMINATED"
    cb.on_trial_complete(iteration=7, trials=trials, trial=trials[2])
    assert out.getvalue() == ""
    trials.append(FakeTrial("d", "RUNNING", chi=4))
    lg.started["d"] = wall.t
    cb.on_trial_start(iteration=8, trials=trials, trial=trials[3])
    assert out.getvalue().startswith("[synthetic] 5/6 done, 1 running, 1 failed, 0 pending")


def test_a_broken_view_never_stops_the_grid(caplog):
    con = C.Console(io.StringIO(), io.StringIO(), tty=False)
    cb = ProgressCallback(object(), "x", console=con)   # no counts to read
    cb.on_step_end(iteration=0, trials=[])
    cb.on_step_end(iteration=1, trials=[])
    assert cb._broken


def test_the_callback_pickles_without_its_console():
    """Tuner pickles its RunConfig, callbacks included (tuner.pkl); a Console holds streams and a lock."""
    con = C.Console(io.StringIO(), io.StringIO(), tty=False)
    cb = ProgressCallback(FakeLogger(2), "synthetic", console=con)
    again = pickle.loads(pickle.dumps(cb))
    assert again.label == "synthetic" and again.console is not con


# --------------------------------------------------------------------------- the session

def ray_handler_on_stderr(monkeypatch):
    """As in run_grid.py: Ray's console handler holds the process's stderr from before the session
    (under pytest it holds the capture stream of the moment ray was imported)."""
    from ray._private.log import PlainRayHandler

    for handler in logging.getLogger("ray").handlers:
        if isinstance(handler, PlainRayHandler):
            monkeypatch.setattr(handler, "stream", sys.stderr)


def test_session_diverts_what_needs_no_action_and_shows_the_rest(tmp_path, capsys, monkeypatch):
    ray_handler_on_stderr(monkeypatch)
    log_path = tmp_path / "logs" / "run.log"
    ray_logger = logging.getLogger("ray.tune.fake")
    from ray._private.log import PlainRayHandler

    (ray_handler,) = [h for h in logging.getLogger("ray").handlers if isinstance(h, PlainRayHandler)]
    before = ray_handler.stream
    with C.session(verbose=1, log_path=log_path) as con:
        assert C.current() is con
        assert ray_handler.stream is sys.stderr, "Ray's records pass the console (below the live line)"
        print("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: x")
        print("[1/2] done   s3 synthetic")
        ray_logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=...")
        ray_logger.info("Started a local Ray instance.")
        ray_logger.warning("Tune detects GPUs, but no trials are using GPUs.")
        sys.stdout.write("partial")
        sys.stdout.flush()
        print(" line")
    captured = capsys.readouterr()
    assert captured.out == "[1/2] done   s3 synthetic\npartial line\n"
    assert "Tune detects GPUs" in captured.err
    assert "Token authentication" not in captured.err and "Started a local" not in captured.err
    text = log_path.read_text()
    for words in ("PYTHON worker processes", "Token authentication", "Started a local Ray instance",
                  "Tune detects GPUs"):
        assert words in text, words
    assert "\x1b" not in text
    # everything restored
    assert C.current() is not con and ray_handler.stream is before
    assert not isinstance(sys.stdout, C._ConsoleStream)
    assert all(C._ConsoleLogFilter not in {type(f) for f in h.filters} for h in logging.getLogger("ray").handlers)


def test_mlflow_run_links_and_tunes_missing_logger_files_go_to_the_log(tmp_path, capsys, monkeypatch):
    """With an http tracking store (a cluster's MLflow server), MLflow prints two links for every
    run it ends; a failed trial's retry makes Tune's loggers warn that result.json is not there
    yet. Neither asks anything of the user: below --verbose 2 both go to the log file only."""
    import types

    from mlflow.entities import Run, RunData, RunInfo
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds

    ray_handler_on_stderr(monkeypatch)
    server = "http://127.0.0.1:5000"
    store = RestStore(lambda: MlflowHostCreds(server))
    run = Run(RunInfo(run_id="abc123", experiment_id="7", user_id="", status="FINISHED", start_time=0,
                      end_time=1, lifecycle_stage="active", run_name="s3_chi2_seed0"), RunData())
    monkeypatch.setattr(store, "get_run", lambda run_id: run)
    client = types.SimpleNamespace(store=store, tracking_uri=server)
    log_path = tmp_path / "logs" / "run.log"
    with C.session(verbose=1, log_path=log_path):
        TrackingServiceClient._log_url(client, "abc123")      # what MLflow prints when a run ends
        logging.getLogger("ray.tune.logger.logger").warning(
            f"Remote file not found: {tmp_path}/runs/grid/trial_0/result.json")
        logging.getLogger("ray.tune.logger.logger").warning(f"Remote file not found: {tmp_path}/runs/model.pt")
        print("[1/2] done   s3 synthetic")
    captured = capsys.readouterr()
    assert captured.out == "[1/2] done   s3 synthetic\n"
    assert "result.json" not in captured.err and "model.pt" in captured.err   # only Tune's own files
    text = log_path.read_text()
    assert f"View run s3_chi2_seed0 at: {server}/#/experiments/7/runs/abc123" in text
    assert f"View experiment at: {server}/#/experiments/7" in text
    assert "trial_0/result.json" in text


def test_a_negative_max_concurrent_is_refused_in_one_line(capsys):
    from orchestrator.cli import main

    for value in ("-2", "0"):
        assert main(["--preset", "smoke", "--max-concurrent", value]) == 2
        captured = capsys.readouterr()
        (line,) = captured.err.splitlines()
        assert line.startswith(f"error: --max-concurrent {value}: at least 1"), line
        assert not captured.out


def test_verbose_2_diverts_nothing(tmp_path, capsys, monkeypatch):
    ray_handler_on_stderr(monkeypatch)
    log_path = tmp_path / "run.log"
    with C.session(verbose=2, log_path=log_path):
        print("WARNING: 8 PYTHON worker processes have been started")
        logging.getLogger("ray.tune.fake").info("Started a local Ray instance.")
    captured = capsys.readouterr()
    assert "PYTHON worker processes" in captured.out and "Started a local Ray instance" in captured.err
    assert not log_path.exists()


def test_a_session_that_logs_nothing_writes_no_file(tmp_path, capsys):
    with C.session(verbose=1, log_path=tmp_path / "logs" / "run.log"):
        print("hello")
    assert not (tmp_path / "logs").exists()


def test_tune_output_selects_the_silent_engine_below_verbose_2(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    import os
    with C.tune_output(1):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    with C.tune_output(2):
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert (C.tune_verbose(0), C.tune_verbose(1), C.tune_verbose(2)) == (0, 0, 2)


def test_driver_log_path_is_local():
    assert C.driver_log_path("/data/runs").parent == Path("/data/runs/logs")
    assert C.driver_log_path("s3://bucket/runs").parent == Path.cwd().resolve() / "s3_runs" / "logs"


# --------------------------------------------------------------------------- the summary

def _config(method, chi, test, std, p, seeds, valid, **params):
    pairs = tuple(sorted({"chi": str(chi), "batch_size": "64", **params}.items()))
    return {"benchmark": "synthetic", "method": method, "chi": chi, "n_seeds": seeds,
            "config_key": repr(pairs + (("preset", "default"), ("method", method))),
            "test_acc_mean": test, "test_acc_std": std, "keep_ratio_mean": p, "valid_acc_mean": valid,
            "test_acc_no_prune_mean": test - 1, "test_acc_no_prune_std": std}


def test_summary_is_one_row_per_method_and_swept_value():
    configs = [_config("clip", 1, 77.25, 0.5, 1.0, 2, 80.0),
               _config("s3", 8, 92.5, 0.25, 0.45, 2, 93.0),
               _config("s3", 2, 90.0, float("nan"), 0.7, 1, 91.0),
               _config("s3_no_select", 2, 85.0, 1.0, 0.6, 2, 86.0)]
    lines = C.summary_lines(configs)
    assert lines[0].startswith("results [synthetic]: test accuracy (%) at the keep-ratio p* chosen on validation")
    assert lines[1].split() == ["method", "chi", "test", "acc", "@p*", "mean", "p*", "test", "acc", "p=1", "seeds"]
    rows = [ln.split() for ln in lines[3:]]
    assert [r[:2] for r in rows] == [["s3", "2"], ["s3", "8"], ["s3_no_select", "2"], ["clip", "1"]]
    assert rows[0][2:] == ["90.0", "0.70", "89.0", "1"]                  # one seed: no std
    assert rows[1][2:] == ["92.5", "±", "0.2", "0.45", "91.5", "±", "0.2", "2"]
    assert not any(ch in "".join(lines) for ch in "╭│╰┌└")


def test_summary_shows_every_swept_field_and_caps_the_rows():
    configs = [_config("s3", 2, 90.0 + i, 0.1, 0.5, 2, 80.0 + i, tau=str(t)) for i, t in enumerate((0.05, 0.1, 0.2))]
    lines = C.summary_lines(configs, max_rows=2)
    assert lines[1].split()[:3] == ["method", "chi", "tau"]
    assert [ln.split()[2] for ln in lines[3:5]] == ["0.1", "0.2"]          # the two best on validation
    assert lines[5] == "  ... 1 more configuration(s), lower on validation: see the report"


def test_mlflow_ui_hint_for_a_file_and_for_a_server():
    local = C.mlflow_ui_hint("sqlite:////abs/mlflow.db", "3", "abc")
    assert local == ("MLflow UI: mlflow ui --backend-store-uri sqlite:////abs/mlflow.db   then open "
                     "http://127.0.0.1:5000/#/experiments/3/runs/abc")
    server = C.mlflow_ui_hint("http://mlflow.lab:5000/", "3", "abc")
    assert server == "MLflow UI: http://mlflow.lab:5000/#/experiments/3/runs/abc"
    assert "mlflow ui" not in server


# --------------------------------------------------------------------------- the real console (slow)

FORBIDDEN = ("╭", "│", "╰", "Trial status", "Result(", "curve_json", "history_len", "spec/overrides",
             "Token authentication", "PYTHON worker processes", "tensorboard", "Traceback", "Downloading artifacts")


def check_default_console(out: str, err: str, n_trials: int) -> None:
    """What the smoke grid's console must and must not hold at the default verbosity, off a terminal."""
    both = out + err
    for words in FORBIDDEN:
        assert words not in both, f"{words!r} in the console:\n{both}"
    assert not re.search(r"\bkind\b", both), both
    assert not re.search(r"\bINFO\b", both), f"an INFO log record on the console:\n{both}"
    assert "\x1b" not in both and "\r" not in both, "control characters off a terminal"
    assert re.search(rf"^\[synthetic\] \d/{n_trials} done, \d running, \d failed, \d pending \| \d+s elapsed",
                     out, re.M), out
    assert f"[{n_trials}/{n_trials}] " in out, out
    assert re.search(rf"^report: reading {n_trials} trial runs \({n_trials} finished\) from 1 experiment\(s\) \.\.\.$", out, re.M), out
    assert re.search(r"^results \[synthetic\]: test accuracy", out, re.M), out
    assert re.search(r"^  method\s+chi\s+test acc @p\*\s+mean p\*\s+test acc p=1\s+seeds$", out, re.M), out
    assert re.search(r"^  s3\s+2\s+\d+\.\d\s+\d\.\d\d\s+\d+\.\d\s+1$", out, re.M), out
    assert re.search(r"^report: /\S+/report/index\.html$", out, re.M), out
    assert re.search(r"^MLflow UI: mlflow ui --backend-store-uri sqlite:////\S+/mlflow\.db   then open "
                     r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/\w+$", out, re.M), out


@pytest.mark.slow
def test_smoke_grid_default_console(tmp_path, grid_runner):
    proc = grid_runner(tmp_path, "--preset", "smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_default_console(proc.stdout, proc.stderr, n_trials=2)
    logs = list((tmp_path / "runs" / "logs").glob("run_grid-*.log"))
    assert len(logs) == 1, logs
    log_text = logs[0].read_text()
    # the INFO records kept off the console are in the log, Ray's and MLflow's both (which records
    # a Ray version writes varies: Token authentication notes appear on some machines only)
    assert re.search(r"^\S+ \S+ INFO mlflow\.[\w.]+: ", log_text, re.M), log_text[-3000:]
    assert re.search(r"^\S+ \S+\s(INFO|WARNING) \w+\.py:\d+ -- ", log_text, re.M), log_text[-3000:]  # Ray's format
    assert f"Ray's and MLflow's log messages: {logs[0]}" in proc.stdout


@pytest.mark.slow
def test_a_failed_trial_is_one_line_naming_its_error_file(tmp_path, grid_runner):
    proc = grid_runner(tmp_path, "--preset", "smoke", "--grid", "tau=[0.1,1e-38]")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both and "Trial task failed" not in both, both
    assert "Remote file not found" not in both, both    # Tune's loggers on the retry: to the log file
    (failed,) = [ln for ln in proc.stdout.splitlines() if " FAILED " in ln]
    m = re.fullmatch(r"\[\d/3\] FAILED s3 synthetic chi=2 batch_size=64 tau=1e-38 seed=0: DivergenceError: .* "
                     r"\(details: (/\S+/error\.txt)\)", failed)
    assert m, failed
    assert Path(m.group(1)).is_file() and str(tmp_path / "runs") in m.group(1)
    assert "DivergenceError" in Path(m.group(1)).read_text()

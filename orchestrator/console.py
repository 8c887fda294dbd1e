"""The console a user watches while run_grid.py runs.

What it shows, by `run_grid.py --verbose`:
    0  the per-trial lines ("[k/N] done ...", "[k/N] FAILED ... (details: file)") and the summary
    1  (default) the same plus a live progress view: done / running / failed / pending, the
       running trials by name, elapsed time and an estimate of the time left
    2  the same plus Ray Tune's own tables, configuration and result boxes (Tune's verbose=2)
       and every Ray / MLflow log message, as Ray prints them

Below 2, Ray's, MLflow's and Optuna's log records go to a log file (`driver_log_path`, under the
checkpoint storage folder, written only if something is logged). The console still shows their
warnings and errors, except NO_ACTION: start-up notices that ask nothing of the user and Tune's
per-trial tracebacks, which the one-line failure points to.

On a terminal the live view is one status line redrawn in place. When stdout is not a terminal
(piped to a file, `ray submit`'s remote console) it is a plain line, printed when a view begins,
then when a trial has started since the last one and STATUS_EVERY_S passed (a trial that ends has
its own line), and at least every HEARTBEAT_S; nothing written to a non-terminal carries a
control character (ESC, carriage return).

How the grid uses it:
    with console.session(args.verbose, console.driver_log_path(args.storage_path)):   # cli.main
        con = console.current()
        progress = console.ProgressCallback(mlflow_logger, label="synthetic")
        RunConfig(callbacks=[mlflow_logger, progress], verbose=console.tune_verbose(args.verbose))
        with console.tune_output(args.verbose):
            tuner.fit()
        rep = build_report(..., progress=con.report_progress)
        con.summary(rep.configs)
        con.closing(report_index, tracking_uri, experiment_id, parent_run_id)
"""
from __future__ import annotations

import ast
import contextlib
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from ray.tune import Callback

STATUS_EVERY_S = 30.0      # off a terminal: a changed status is printed at most this often
HEARTBEAT_S = 300.0        # off a terminal: an unchanged status is repeated this often (still alive)
REDRAW_EVERY_S = 1.0       # on a terminal: the clock in the status line ticks this often
RUNNING_SHOWN = 3          # running trials named in the status line; the rest are counted
SUMMARY_MAX_ROWS = 24      # configurations in the console summary; the report has them all

# Log records and printed lines that ask nothing of the user: below --verbose 2 they go to the
# log file only. Each pattern is searched in the message.
NO_ACTION = tuple(re.compile(p) for p in (
    # Ray's default for a local cluster; nothing to set
    r"Token authentication is (enabled|disabled) for this Ray cluster",
    # the raylet counts one process per Tune function and per Ray Train worker against a guess of
    # 2 per CPU; expected with 0.01-CPU Tune functions (ray-project/ray#63800: cannot be silenced)
    r"PYTHON worker processes have been started",
    # Tune timing our own MLflow logger (it plots and uploads each finished trial's curve)
    r"may be a performance bottleneck",
    # a failed trial's traceback: the console prints one FAILED line naming its error file
    r"Trial task failed for trial",
    r"Trials did not complete",
))
QUIET_LOGGERS = ("ray", "mlflow", "optuna")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

log = logging.getLogger("orchestrator.console")


def no_action(message: str) -> bool:
    """True for a message in NO_ACTION."""
    return any(p.search(message) for p in NO_ACTION)


def plain(text: str) -> str:
    """`text` without control characters, as a terminal would show it: ANSI escapes dropped, a
    carriage return keeps what follows it, tabs and newlines kept."""
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    text = "\n".join(ln.rsplit("\r", 1)[-1] for ln in text.split("\n"))
    return _CONTROL.sub("", text)


def duration(seconds: float) -> str:
    """45s, 3m05s, 1h02m."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def driver_log_path(storage_path: str | None) -> Path:
    """Where Ray's and MLflow's messages go below --verbose 2: <storage>/logs/run_grid-<time>-<pid>.log,
    <storage> being --storage-path when it is a local folder, else ./s3_runs (the default storage)."""
    root = Path(storage_path) if storage_path and "://" not in storage_path else Path.cwd() / "s3_runs"
    return root.resolve() / "logs" / f"run_grid-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


class _LazyFileHandler(logging.FileHandler):
    """A FileHandler that creates its file (and folder) on the first record, so a run that logs
    nothing leaves no file."""

    def __init__(self, path: Path):
        super().__init__(str(path), delay=True, encoding="utf-8")

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _ConsoleLogFilter(logging.Filter):
    """On a library's console handler: warnings and errors only, none of NO_ACTION."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not no_action(record.getMessage())


class Console:
    """Writes the run's console: permanent lines, and one live status line.

    Args:
        out, err: the real stdout and stderr.
        verbose: run_grid.py's --verbose (0 has no live view).
        tty: whether `out` is a terminal (default: out.isatty()).
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, out=None, err=None, *, verbose: int = 1, tty: bool | None = None, clock=time.monotonic):
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.verbose = verbose
        self.tty = bool(self.out.isatty()) if tty is None else tty
        self.clock = clock
        self.lock = threading.RLock()   # Ray prints from its own threads
        self.log_path: Path | None = None
        self._file_handler: logging.Handler | None = None
        self._filter = _ConsoleLogFilter()
        self._filtered: list[logging.Handler] = []
        self._stderr = None         # the session's sys.stderr, for the libraries' log handlers
        self._wrapped = ()          # the streams the session stands in for
        self._redirected: dict[logging.Handler, object] = {}
        self._status = ""           # the latest status text
        self._shown = ""            # the status text drawn on the terminal now
        self._open_line = False     # a partial line was written: do not draw over it
        self._key = None            # what the last printed/drawn status showed, clock aside
        self._phase = None
        self._at = -math.inf        # when it was printed/drawn

    # --- permanent output ----------------------------------------------------------------
    def write(self, text: str, err: bool = False) -> None:
        """Write text as it is (whole lines, or a partial line), below the live line."""
        with self.lock:
            self._clear()
            stream = self.err if err else self.out
            terminal = self._err_tty() if err else self.tty
            stream.write(text if terminal else plain(text))
            stream.flush()
            self._open_line = bool(text) and not text.endswith("\n")
            self._redraw()

    def line(self, text: str = "", err: bool = False) -> None:
        self.write(text + "\n", err)

    def _err_tty(self) -> bool:
        try:
            return bool(self.err.isatty())
        except (AttributeError, ValueError):
            return False

    # --- the live view -------------------------------------------------------------------
    def status(self, text: str, key=None, phase=None) -> None:
        """Show `text` as the live view.

        Args:
            key: what the text shows apart from the clock (default: the text); off a terminal,
                a new key is printed after STATUS_EVERY_S, the same key after HEARTBEAT_S.
            phase: a new phase (another grid, the report) is printed at once.
        """
        if self.verbose < 1:
            return
        key = text if key is None else key
        with self.lock:
            now = self.clock()
            if self.tty:
                self._status = text
                if text != self._shown and (key != self._key or phase != self._phase
                                            or now - self._at >= REDRAW_EVERY_S):
                    self._key, self._phase, self._at = key, phase, now
                    self._draw()
                return
            due = (phase != self._phase or now - self._at >= HEARTBEAT_S
                   or (key != self._key and now - self._at >= STATUS_EVERY_S))
            if due:
                self._key, self._phase, self._at = key, phase, now
                self.out.write(plain(text) + "\n")
                self.out.flush()

    def end_status(self) -> None:
        """The live view is over (a grid or the report finished): remove it from the terminal."""
        with self.lock:
            self._clear()
            self._status = ""
            self._phase = None

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 24)).columns - 1)

    def _draw(self) -> None:
        if self._open_line or not self._status:
            return
        text = plain(self._status)[: self._width()]
        self.out.write("\r\x1b[K" + text)
        self.out.flush()
        self._shown = self._status

    def _clear(self) -> None:
        if self.tty and self._shown:
            self.out.write("\r\x1b[K")
            self._shown = ""

    def _redraw(self) -> None:
        if self.tty and self._status:
            self._draw()

    def report_progress(self, what: str, done: int, total: int) -> None:
        """build_report's progress hook: 'reading trials', 3, 14."""
        self.status(f"report: {what} {done}/{total}", key=what, phase="report")

    # --- the end of a grid ---------------------------------------------------------------
    def summary(self, configs: list[dict], max_rows: int = SUMMARY_MAX_ROWS) -> None:
        """The results table (see summary_lines)."""
        self.end_status()
        for text in summary_lines(configs, max_rows):
            self.line(text)

    def closing(self, report_index: str | Path | None, tracking_uri: str, experiment_id: str | None = None,
                parent_run_id: str | None = None) -> None:
        """Where the report is, how to open the MLflow UI, where Ray's messages went."""
        self.end_status()
        for text in closing_lines(report_index, tracking_uri, experiment_id, parent_run_id, self.log_path):
            self.line(text)

    # --- Ray's and MLflow's log records --------------------------------------------------
    def open_log(self, path: Path) -> None:
        self.log_path = Path(path)
        self._file_handler = _LazyFileHandler(self.log_path)
        self._file_handler.setLevel(logging.INFO)
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(self._file_handler)
        log.setLevel(logging.INFO)
        log.propagate = False

    def adopt_loggers(self) -> None:
        """QUIET_LOGGERS' handlers that write to the process's own stdout or stderr (Ray's holds
        the stderr of the moment ray was imported) write through the session's stderr instead, so
        that they too pass below the live line; handlers on streams of their own (MLflow's, which
        it can switch off) are left as they are. Below --verbose 2 their records also go to the
        log file, and only those a user acts on reach the console. Idempotent: called again for
        loggers set up since (optuna)."""
        std = {id(s) for s in (sys.__stdout__, sys.__stderr__, *self._wrapped)}
        for name in QUIET_LOGGERS:
            if name not in sys.modules:
                continue
            logger = logging.getLogger(name)
            if self._file_handler is not None and self._file_handler not in logger.handlers:
                logger.addHandler(self._file_handler)
            for handler in logger.handlers:
                if handler is self._file_handler or isinstance(handler, logging.FileHandler):
                    continue
                if (self._stderr is not None and isinstance(handler, logging.StreamHandler)
                        and id(handler.stream) in std and handler not in self._redirected):
                    self._redirected[handler] = handler.setStream(self._stderr)
                if self._file_handler is not None and self._filter not in handler.filters:
                    handler.addFilter(self._filter)
                    self._filtered.append(handler)

    def divert(self, text: str) -> None:
        """A printed line that asks nothing of the user: to the log file."""
        log.info("%s", plain(text).rstrip("\n"))

    def close(self) -> None:
        for handler, stream in self._redirected.items():
            handler.setStream(stream)
        self._redirected.clear()
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        self._filtered.clear()
        if self._file_handler is not None:
            for name in (*QUIET_LOGGERS, log.name):
                logging.getLogger(name).removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None


class _ConsoleStream:
    """Stands in for sys.stdout or sys.stderr during a session, so that every line printed by
    anyone (Ray's raylet warnings, the MLflow logger's result lines) passes the Console: below
    the live status line, without control characters off a terminal, NO_ACTION lines diverted."""

    def __init__(self, console: Console, real, err: bool, divert: bool):
        self._console = console
        self._real = real
        self._err = err
        self._divert = divert
        self._buf = ""

    def write(self, s: str) -> int:
        with self._console.lock:
            self._buf += s
            if "\n" in self._buf:
                *lines, self._buf = self._buf.split("\n")
                shown = []
                for ln in lines:
                    if self._divert and no_action(ln):
                        self._console.divert(ln)
                    else:
                        shown.append(ln + "\n")
                if shown:   # at once: the live line is cleared and redrawn once per write
                    self._console.write("".join(shown), self._err)
        return len(s)

    def flush(self) -> None:
        with self._console.lock:
            if self._buf:   # a partial line someone wants shown now (a prompt)
                text, self._buf = self._buf, ""
                self._console.write(text, self._err)
            self._real.flush()

    def isatty(self) -> bool:
        return self._real.isatty()

    def __getattr__(self, name):   # fileno, encoding, buffer, ...
        return getattr(self._real, name)


_CURRENT: Console | None = None


def current() -> Console:
    """The session's Console; outside a session, a plain one on sys.stdout (grid.run called
    directly, as in tests)."""
    return _CURRENT if _CURRENT is not None else Console(verbose=0)


@contextlib.contextmanager
def session(verbose: int = 1, log_path: Path | None = None):
    """The console of one run_grid.py invocation: sys.stdout and sys.stderr pass through a
    Console until the block ends; below verbose 2, log records go to `log_path`.

    Yields:
        the Console (also returned by current()).
    """
    global _CURRENT
    import mlflow  # noqa: F401  (sets up its logger, adopted below, before the store says anything)

    con = Console(sys.stdout, sys.stderr, verbose=verbose)
    quiet = verbose < 2 and log_path is not None
    if quiet:
        con.open_log(log_path)
    saved = sys.stdout, sys.stderr, _CURRENT
    sys.stdout = _ConsoleStream(con, saved[0], err=False, divert=quiet)
    sys.stderr = con._stderr = _ConsoleStream(con, saved[1], err=True, divert=quiet)
    con._wrapped = saved[:2]
    con.adopt_loggers()
    _CURRENT = con
    try:
        yield con
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _ConsoleStream):
                stream.flush()
        con.end_status()
        sys.stdout, sys.stderr, _CURRENT = saved
        con.close()


def tune_verbose(verbose: int) -> int:
    """Tune's RunConfig(verbose=...) for run_grid.py's --verbose."""
    return 2 if verbose >= 2 else 0


@contextlib.contextmanager
def tune_output(verbose: int):
    """Around Tuner.fit. Below --verbose 2, Tune's legacy output engine (RAY_AIR_NEW_OUTPUT=0)
    with verbose=0 prints nothing; the new engine, Ray 2.60's default, prints its configuration
    box, the TensorBoard hint and the final status table even at verbose=0
    (ray/tune/experimental/output.py: TuneTerminalReporter.experiment_started, print_heartbeat
    with force=True). The variable is read when fit() starts, in this process; restored after."""
    current().adopt_loggers()
    if verbose >= 2:
        yield
        return
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


class ProgressCallback(Callback):
    """A Tune callback that keeps the live view of one Tuner.fit up to date.

    Done, failed and the total come from the MLflow trial logger (which must come before it in
    RunConfig.callbacks, so its counts are current), the running trials from Tune's trial list,
    their start times from the logger. Its own state is each ended trial's duration, for the
    estimate of the time left (a trial stays RUNNING in Tune for a moment after its last result).

    Args:
        logger: the MlflowTrialLogger of this fit (attributes total, done, failed, started).
        label: what the view is of, e.g. 'synthetic' or 'synthetic seed=1'.
        console: default: current().
    """

    wall_clock = staticmethod(time.time)   # the clock of the logger's start times

    def __init__(self, logger, label: str, console: Console | None = None):
        self.logger = logger
        self.label = label
        self._console = console
        self._names: dict[str, str] = {}
        self._ended: dict[str, float] = {}    # trial id -> seconds it ran
        self._slots = 1                        # the most trials seen running at once
        self._t0: float | None = None
        self._broken = False

    @property
    def console(self) -> Console:
        return self._console if self._console is not None else current()

    def __getstate__(self):
        # Tuner pickles its RunConfig (tuner.pkl): the console holds the process's streams
        state = dict(self.__dict__)
        state["_console"] = None
        return state

    # --- Tune callback hooks -------------------------------------------------------------
    def setup(self, **info):
        self._t0 = self.console.clock()

    def on_step_end(self, iteration, trials, **info):
        self.show(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.show(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("kind") == "done":    # the trial's last result (orchestrator.trial)
            self._end(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)
        self.show(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)
        self.show(trials)

    def _end(self, trial) -> None:
        if trial.trial_id not in self._ended:
            started = self.logger.started.get(trial.trial_id)
            self._ended[trial.trial_id] = self.wall_clock() - started if started is not None else math.nan

    def on_experiment_end(self, trials, **info):
        self.console.end_status()

    # --- the view ------------------------------------------------------------------------
    def show(self, trials) -> None:
        if self._broken:
            return
        try:
            text, key = self.view(trials)
            self.console.status(text, key=key, phase=("grid", self.label))
        except Exception:   # a display bug must not stop the grid
            self._broken = True
            log.exception("the progress view failed; the grid goes on without it")

    def _name(self, trial) -> str:
        if trial.trial_id not in self._names:
            from orchestrator.trial import TrialSpec
            try:
                self._names[trial.trial_id] = TrialSpec.from_config(trial.config).short()
            except (KeyError, TypeError):
                self._names[trial.trial_id] = str(trial)
        return self._names[trial.trial_id]

    def time_left(self, running, pending: int, wall: float) -> float | None:
        """Seconds left, or None before any trial ended: each running trial needs what is left of
        the mean trial duration, each pending one the whole of it, spread over as many trials at
        once as have run at once."""
        spans = [d for d in self._ended.values() if not math.isnan(d)]
        if not spans or not (running or pending):
            return None
        mean = sum(spans) / len(spans)
        work = pending * mean
        for t in running:
            started = self.logger.started.get(t.trial_id)
            work += max(0.0, mean - (wall - started)) if started is not None else mean
        return work / self._slots

    def view(self, trials) -> tuple[str, int]:
        """(status text, the key Console.status compares: the number of trials started)."""
        now = self.console.clock()
        if self._t0 is None:
            self._t0 = now
        wall = self.wall_clock()
        lg = self.logger
        running = [t for t in trials if t.status == "RUNNING" and t.trial_id not in self._ended]
        self._slots = max(self._slots, len(running))
        finished = lg.done + lg.failed
        pending = max(0, lg.total - finished - len(running))
        elapsed = now - self._t0
        text = (f"[{self.label}] {lg.done}/{lg.total} done, {len(running)} running, {lg.failed} failed, "
                f"{pending} pending | {duration(elapsed)} elapsed")
        left = self.time_left(running, pending, wall)
        if left is not None:
            text += ", < 1m left" if left < 60 else f", ~{duration(left)} left"
        elif running or pending:
            text += ", time left known after the first trial"
        if running:
            shown = []
            for t in running[:RUNNING_SHOWN]:
                started = lg.started.get(t.trial_id)
                shown.append(self._name(t) + (f" ({duration(wall - started)})" if started is not None else ""))
            more = len(running) - RUNNING_SHOWN
            text += " | running: " + "; ".join(shown) + (f"; +{more} more" if more > 0 else "")
        # what counts as news for a log: a trial started (an ended one has its own line already)
        key = len(lg.started)
        return text, key


# --- the summary table ---------------------------------------------------------------------

def _config_fields(row: dict) -> dict:
    """The configuration's parameters, from the report's config_key (a repr of (name, value)
    pairs); just chi when it cannot be read."""
    try:
        pairs = ast.literal_eval(row.get("config_key", ""))
        fields = {str(k): str(v) for k, v in pairs}
    except (ValueError, SyntaxError, TypeError):
        fields = {}
    fields.pop("method", None)
    fields.pop("preset", None)
    fields.setdefault("chi", str(row.get("chi", "")))
    return fields


def _sort_value(v: str):
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def _accuracy(mean, std, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.1f}"


def summary_lines(configs: list[dict], max_rows: int = SUMMARY_MAX_ROWS) -> list[str]:
    """A plain-text table per benchmark: one row per method and value of the swept fields, with
    the test accuracy (%) at the p chosen on validation (mean ± std over seeds), the mean chosen
    p, the test accuracy without pruning, and the number of seeds.

    Args:
        configs: build_report's ReportResult.configs (accuracies already in percent).
        max_rows: per benchmark; beyond it, the configurations best on validation are kept.
    Returns:
        lines, no trailing newlines.
    """
    from orchestrator.mlflow_layout import METHODS

    lines: list[str] = []
    for bench in sorted({r["benchmark"] for r in configs}):
        rows = [dict(r, _fields=_config_fields(r)) for r in configs if r["benchmark"] == bench]
        swept = {"chi"}
        for method in {r["method"] for r in rows}:
            mine = [r["_fields"] for r in rows if r["method"] == method]
            for name in set().union(*mine):
                if len({f.get(name) for f in mine}) > 1:
                    swept.add(name)
        fields = ["chi"] + sorted(swept - {"chi"})
        hidden = 0
        if len(rows) > max_rows:
            rows.sort(key=lambda r: -r.get("valid_acc_mean", 0.0))
            hidden, rows = len(rows) - max_rows, rows[:max_rows]
        rows.sort(key=lambda r: (METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS),
                                 r["method"], [_sort_value(r["_fields"].get(f, "")) for f in fields]))
        header = ["method", *fields, "test acc @p*", "mean p*", "test acc p=1", "seeds"]
        table = [header] + [[r["method"], *(r["_fields"].get(f, "-") for f in fields),
                             _accuracy(r.get("test_acc_mean"), r.get("test_acc_std"), r.get("n_seeds", 1)),
                             f"{r.get('keep_ratio_mean', float('nan')):.2f}",
                             _accuracy(r.get("test_acc_no_prune_mean"), r.get("test_acc_no_prune_std"),
                                       r.get("n_seeds", 1)),
                             str(r.get("n_seeds", ""))] for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines.append(f"results [{bench}]: test accuracy (%) at the keep-ratio p* chosen on validation, "
                     "mean ± std over seeds")
        for i, row in enumerate(table):
            cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
            lines.append("  " + "  ".join(cells).rstrip())
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if hidden:
            lines.append(f"  ... {hidden} more configuration(s), lower on validation: see the report")
    return lines


def mlflow_ui_hint(tracking_uri: str, experiment_id: str | None = None, parent_run_id: str | None = None) -> str:
    """How to look at the runs: a local store needs `mlflow ui` started on it; a server is
    already one, so its URL is the answer."""
    page = ""
    if experiment_id:
        page = f"#/experiments/{experiment_id}" + (f"/runs/{parent_run_id}" if parent_run_id else "")
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow UI: {tracking_uri.rstrip('/')}/{page}"
    return (f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}   then open http://127.0.0.1:5000/{page}")


def closing_lines(report_index, tracking_uri: str, experiment_id=None, parent_run_id=None,
                  log_path: Path | None = None) -> list[str]:
    lines = []
    if report_index:
        lines.append(f"report: {Path(report_index).resolve()}")
    lines.append(mlflow_ui_hint(tracking_uri, experiment_id, parent_run_id))
    if log_path is not None and Path(log_path).exists():
        lines.append(f"Ray's and MLflow's log messages: {log_path}")
    return lines

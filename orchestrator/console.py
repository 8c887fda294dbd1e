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

On a terminal (also `ray submit`'s, which runs over `ssh -tt`) the live view is one status line
redrawn in place. When stdout is not a terminal (piped to a file, a Ray job's log) it is a plain
line, printed when a view begins, then when a trial has started since the last one and
STATUS_EVERY_S passed (a trial that ends has its own line), and at least every HEARTBEAT_S;
nothing written to a non-terminal carries a control character (ESC, carriage return).

How the grid uses it:
    with console.session(args.verbose, console.driver_log_path(args.storage_path)):   # cli.main
        con = console.current()
        progress = ProgressCallback(mlflow_logger, label="synthetic")   # orchestrator.progress
        RunConfig(callbacks=[mlflow_logger, progress], verbose=console.tune_verbose(args.verbose))
        with console.tune_output(args.verbose):
            tuner.fit()
        rep = build_report(..., progress=con.report_progress)
        con.summary(rep.configs)
        con.closing(report_index, tracking_uri, experiment_id, parent_run_id)
"""
from __future__ import annotations

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

from orchestrator.console_text import SUMMARY_MAX_ROWS, closing_lines, summary_lines

STATUS_EVERY_S = 30.0      # off a terminal: a changed status is printed at most this often
HEARTBEAT_S = 300.0        # off a terminal: an unchanged status is repeated this often (still alive)
REDRAW_EVERY_S = 1.0       # on a terminal: the clock in the status line ticks this often
RUNNING_SHOWN = 3          # running trials named in the status line; the rest are counted


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
    # Tune's loggers restoring their files for a trial that restarts before it wrote them (a
    # failed trial's retry): nothing is lost, the trial writes them anew
    r"Remote file not found: \S*/(result\.json|progress\.csv|params\.json|params\.pkl)$",
    # MLflow's links to each run it ends, with an http store (a cluster's server): the console's
    # closing lines name the experiment's page once
    r"View run .* at: https?://",
    r"View experiment at: https?://",
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

    def report_progress(self, line: str) -> None:
        """build_report's progress hook: one line per stage ("report: plotting synthetic ...")."""
        self.status(line, key="report", phase="report")

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


# re-exported: the console's closing line is built there
from orchestrator.console_text import mlflow_ui_hint  # noqa: E402,F401

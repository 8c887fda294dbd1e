"""The live progress view of one Tuner.fit: a Ray Tune callback feeding orchestrator.console.

Kept apart from the console itself (which owns the terminal, the session and the log routing),
so each module holds one idea. The per-trial counts come from the MLflow trial logger.
"""
from __future__ import annotations

import logging
import math
import time

from ray.tune import Callback

from orchestrator.console import RUNNING_SHOWN, Console, current, duration
from orchestrator.contract import TrialSpec

log = logging.getLogger(__name__)


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
        if result.get("kind") == "done":    # the trial's last result (contract.DoneReport)
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


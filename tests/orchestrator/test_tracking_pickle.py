"""Tune pickles the grid's callbacks. ray.shutdown() (after a first grid in the same process: a
notebook, a test session) replaces builtins.print with tqdm_ray's safe_print; a callback holding
the built-in print of import time then fails to pickle ("not the same object as builtins.print")."""
import builtins

import ray.cloudpickle as cloudpickle

from orchestrator.tracking import MlflowTrialLogger


def test_the_trial_logger_pickles_after_builtins_print_was_replaced(monkeypatch, capsys):
    logger = MlflowTrialLogger(None, "0", "parent", {}, {}, total=1)
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: None)   # as ray.shutdown() leaves it
    copy = cloudpickle.loads(cloudpickle.dumps(logger))
    monkeypatch.undo()
    copy.print("a line")                  # prints through builtins.print as it is when called
    assert capsys.readouterr().out == "a line\n"

"""Turn the errors a user can fix into one line on stderr and exit code 2 (no traceback)."""
from __future__ import annotations

import contextlib
import sys


class ResweepError(RuntimeError):
    """A run that cannot be re-swept (orchestrator.resweep). One line naming the fix."""


def user_error_types() -> tuple[type, ...]:
    # imported when an error is caught, not with this module: plan loads torch (orchestrator.contract)
    # and mlflow is optional here
    from s3core.config import ConfigError
    from s3core.data.base import DataError

    from orchestrator.plan import GridError
    from search_spaces import PresetError
    types = [ConfigError, DataError, GridError, PresetError, ResweepError]
    try:
        from mlflow.exceptions import MlflowException   # as above
        types.append(MlflowException)
    except ImportError:
        pass
    return tuple(types)


@contextlib.contextmanager
def user_errors():
    try:
        yield
    except user_error_types() as err:
        msg = " ".join(str(err).split())  # one line
        print(f"error: {type(err).__name__}: {msg}", file=sys.stderr, flush=True)
        raise SystemExit(2)

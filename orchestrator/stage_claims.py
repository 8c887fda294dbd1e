"""Stage-cache claims that every node of a Ray cluster sees: a named actor of the grid's driver.

s3core.stagecache takes its claims through a small interface (`Claims`: acquire / refresh /
release); a lock file next to the cache only works for the processes of one machine. The grid's
driver starts one `ClaimBroker` actor (no resources, owned by the driver: it ends with the grid)
and every trial, on whatever node, reaches it by name through `RayClaims`. A claim whose holder
stops refreshing it for `stale_after_s` (the trial's node died) is handed to the next asker.

Claims only save duplicate work: when the broker cannot be reached, a trial trains the stage
itself (the cache's entries stay whole or absent, and two writers of a key write the same bytes).
"""
from __future__ import annotations

import time
import uuid

import ray

STALE_AFTER_S = 120.0


class ClaimBroker:
    """key -> (holder, info, last heartbeat). One per grid; a Ray actor, plain Python here."""

    def __init__(self, stale_after_s: float = STALE_AFTER_S):
        self.stale_after_s = stale_after_s
        self.held: dict[str, tuple[str, dict, float]] = {}
        self.granted = 0

    def acquire(self, key: str, holder: str, info: dict) -> bool:
        now = time.monotonic()
        current = self.held.get(key)
        if current is not None and current[0] != holder and now - current[2] <= self.stale_after_s:
            return False
        self.held[key] = (holder, info, now)
        self.granted += 1
        return True

    def refresh(self, key: str, holder: str) -> None:
        current = self.held.get(key)
        if current is not None and current[0] == holder:
            self.held[key] = (holder, current[1], time.monotonic())

    def release(self, key: str, holder: str) -> None:
        current = self.held.get(key)
        if current is not None and current[0] == holder:
            del self.held[key]

    def stats(self) -> dict:
        return {"granted": self.granted, "held": {k: v[1] for k, v in self.held.items()}}


class RayClaims:
    """s3core's Claims, served by the grid's ClaimBroker (found by name, on any node)."""

    def __init__(self, name: str, namespace: str | None):
        self.name, self.namespace, self._actor = name, namespace, None

    def __getstate__(self):
        return {"name": self.name, "namespace": self.namespace, "_actor": None}

    def _call(self, method: str, *args, unreachable=None):
        try:
            if self._actor is None:
                self._actor = ray.get_actor(self.name, namespace=self.namespace)
            return ray.get(getattr(self._actor, method).remote(*args), timeout=60)
        except Exception:    # the driver (and its broker) is gone: train, never wait on it
            return unreachable

    def acquire(self, key: str, holder: str, info: dict) -> bool:
        return bool(self._call("acquire", key, holder, info, unreachable=True))

    def refresh(self, key: str, holder: str) -> None:
        self._call("refresh", key, holder)

    def release(self, key: str, holder: str) -> None:
        self._call("release", key, holder)


def start_broker():
    """The grid's broker (call on the driver, Ray initialised): (actor handle, "namespace/name").
    Keep the handle for as long as the grid runs."""
    name = f"s3-stage-claims-{uuid.uuid4().hex[:12]}"
    namespace = ray.get_runtime_context().namespace
    actor = ray.remote(num_cpus=0, max_restarts=-1)(ClaimBroker).options(name=name, namespace=namespace).remote()
    ray.get(actor.stats.remote())
    return actor, f"{namespace}/{name}"


def claims_of(address: str) -> RayClaims | None:
    """The trial's view of the broker named by start_broker's address ("" = none)."""
    if not address:
        return None
    namespace, _, name = address.rpartition("/")
    return RayClaims(name, namespace or None)


__all__ = ["ClaimBroker", "RayClaims", "start_broker", "claims_of"]

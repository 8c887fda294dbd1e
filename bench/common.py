"""Shared helpers: machine description, interleaved timing, peak RSS of a subprocess."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import torch   # not at module level: the data section's measured child processes import this module
    info = {
        "cpu": cpu_model(),
        "logical cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads (intra-op)": torch.get_num_threads(),
        "MKL": torch.backends.mkl.is_available(),
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    try:
        info["memory"] = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return info


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every candidate once per round, in turn, for warmup + rounds rounds; the warm-up
    rounds are dropped. Candidates in one round run back to back, so a ratio within a round
    compares them under the same machine load."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for r in range(warmup + rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return times


def ratio_stats(times: dict[str, list[float]], ref: str) -> dict[str, dict]:
    """Per candidate: median time and the median/min/max over rounds of time / ref's time in the same round."""
    out = {}
    for name, ts in times.items():
        ratios = [t / r for t, r in zip(ts, times[ref])]
        out[name] = {"median_s": statistics.median(ts), "ratio": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios), "rounds": len(ts)}
    return out


def run_child(module: str, args: dict, timeout: float = 900) -> dict:
    """Run `python -m <module> '<json args>'` in a fresh interpreter; it prints one JSON line last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs resets VmHWM), so
    the peak read next is that of the code that runs after this call, not of the imports."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Current resident set size (VmRSS), MiB; falls back to the peak where /proc is missing."""
    v = _status_kib("VmRSS")
    return v / 1024 if v is not None else maxrss_mib()


def maxrss_mib() -> float:
    """This process's peak resident set size since start or the last reset_peak_rss() (VmHWM);
    ru_maxrss (KiB on Linux, never reset) where /proc is missing."""
    v = _status_kib("VmHWM")
    if v is not None:
        return v / 1024
    import resource   # Unix only, and only where /proc is missing
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.1f}"

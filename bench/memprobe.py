"""Child process for peak-memory measurement: `python -m bench.memprobe '<json>'`.

Prints one JSON line. For the FFN case it reports the peak RSS during one forward + backward
(VmHWM, reset just before the step via /proc/self/clear_refs) minus the RSS just before it (after
imports, module, input tensor and one untimed forward + backward at a tiny size). This is
what the step adds on top of the model and its input: activations saved for backward, temporary
buffers and gradients, as the OS sees it (glibc may keep freed memory mapped, so it is an upper
bound of the live tensors' peak).
"""
from __future__ import annotations

import json
import sys
import time


def _ffn(a: dict) -> dict:
    # a measured process: each case imports what it needs and nothing else (its peak RSS counts it)
    import torch
    torch.set_num_threads(int(a["threads"]))
    from bench.common import maxrss_mib, reset_peak_rss, rss_mib   # as above
    from bench.moe_bench import _fwd_bwd, _inputs, _make
    m = _make(a["kind"], a["d_model"], a["d_ff"], a["chi"], a["rho"])
    _fwd_bwd(m, _inputs(a["d_model"], 64, 8))()       # kernels and lazy state, at a tiny size
    x = _inputs(a["d_model"], a["tokens"], a["seq"])
    step = _fwd_bwd(m, x)
    reset_peak_rss()
    base = rss_mib()
    t0 = time.perf_counter()
    step()
    dt = time.perf_counter() - t0
    return {"base_mib": base, "peak_mib": maxrss_mib(), "delta_mib": maxrss_mib() - base, "seconds": dt}


def main() -> None:
    a = json.loads(sys.argv[1])
    if a["case"] == "ffn":
        res = _ffn(a)
    else:
        from bench.data_bench import child   # as above
        res = child(a)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

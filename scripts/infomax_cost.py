"""Seconds per training batch of each dense baseline (issue 21): one forward, backward and Adam step
of the method's first stage on the `base` synthetic variant, batch 128, the library's default model,
one thread; the median of 3 after a warm-up. docs/RESULTS.md ("The InfoMax baselines") gives the figures.

    python scripts/infomax_cost.py
"""
import time, torch
torch.set_num_threads(1)
from s3core.config import S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.methods import get_method
from s3core.pipeline import build_model
from s3core.stages import epoch_generator
from s3core.tensors import to_tensors
data = to_tensors(make_synthetic(SyntheticConfig(label="unique")))
for name, extra in (("clip", {}), ("focal", {}), ("disentangled_ssl", {}), ("joint_opt", {}), ("factorcl", {}), ("factorcl", {"factorcl_critic_hidden": 64})):
    m = get_method(name); cfg = m.config(S3Config(batch_size=128, **extra))
    model = build_model(data, cfg, name)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    idx = torch.arange(128); gen = epoch_generator(0, "t", 0, "cpu")
    ts = []
    for i in range(4):
        t0 = time.perf_counter(); loss, _ = m.stages[0].loss(model, data, cfg, idx, gen); opt.zero_grad(); loss.backward(); opt.step(); ts.append(time.perf_counter() - t0)
    print(name, extra, "s/batch (median of last 3):", round(sorted(ts[1:])[1], 3), flush=True)

"""One S3 trial on the localized variant (data seed 0, epochs 2 + 1, p in 1, 0.6, 0.2) printing its
diagnostics per epoch, its summary and curve (docs/RESULTS.md, issue 20). python scripts/diagnose_localized.py"""
import time
from s3core.config import S3Config
from s3core.data.synthetic import SyntheticConfig, make_synthetic
from s3core.pipeline import run_trial
t = time.time()
b = make_synthetic(SyntheticConfig(variant="localized", seed=0))
r = run_trial(b, S3Config(epochs_special=2, epochs_select=1, epoch_probe=False, keep_ratios=(1.0, 0.6, 0.2)), "s3", progress=False)
keys = ("diag/local_entropy", "diag/global_entropy", "diag/moe_share", "diag/gate_auc")
for h in r.history:
    print(h["stage"], h["epoch"], {k: round(h[k], 3) for k in keys if k in h}, flush=True)
print({k: round(v, 4) for k, v in r.summary.items()})
print([(c["keep_ratio"], c["test_acc"], round(c["embed_cos_dist"], 4)) for c in r.curve], time.time() - t)

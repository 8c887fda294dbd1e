"""A positive control for Stage 3: a model, every weight set by hand, on which pruning must help.

The data: the synthetic `localized` generator with its nuisance off and a linear label, T = 20
steps of which an event window of 4 carries the label's factors; the 16 other steps are pure
noise (the generator's noise plus `background_noise` more), and one extra input channel marks the
event steps (1 there, 0 elsewhere).

The model (an ordinary S3Model, one block, chi = 1, rho = 2 experts, top-1): attention and
positions contribute nothing; the input projection undoes the per-feature standardisation and
writes each token's raw features and marker into a residual subspace A *and their negatives into
a mirror subspace*, so every token's mean over d_model is exactly 0 (LayerNorm then only divides
by the token's RMS, and a token with nothing in a subspace stays exactly 0 there). The router
gives expert 0 a logit proportional to the (normalised) marker and expert 1 nothing, so a noise
step's gate is exactly 0.5 and an event step's is close to 1; both experts copy the token's
features from A into a readout subspace B (and its mirror); the final LayerNorm keeps B only, so
a token whose pair is pruned contributes exactly zero to the mean pool; the head passes B
through (its GELU made linear by an offset). Pruning the lowest-gate pairs therefore drops the
noise steps first (test accuracy rises towards p = 0.2, the event share) and then event steps
(it falls): the inverted U that Stage 3 must be able to show. `check_curve` says what is wrong
with a curve that does not show it; tests/s3core/test_control.py asserts it in both prune
scopes, and that it fails when Stage 3 keeps random pairs instead of the highest-gate ones.

Measured curve and the command that prints it: docs/RESULTS.md, "Positive control".
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from s3core.config import S3Config
from s3core.data.base import Benchmark, Split, validate_benchmark
from s3core.data.synthetic import SyntheticConfig, make_synthetic
from s3core.encoder import S3Model
from s3core.stages import sparsify
from s3core.summary import choose_on_valid
from s3core.tensors import BenchmarkTensors, to_tensors

SEQ_LEN, EVENT_STEPS, FEATURES = 20, 4, 7
KEEP_RATIOS = (1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01)
MARKER = 3.0          # the marker channel's value in the residual stream on event steps
ROUTER_GAIN = 1.0     # expert 0's logit per unit of the normalised marker
GELU_OFFSET = 4.0     # gelu(x + c) - c ~ x for the values that pass through the experts and the head


def control_benchmark(seed: int = 0, n_train: int = 2000, n_valid: int = 500, n_test: int = 500,
                      background_noise: float = 1.0) -> Benchmark:
    """The control's data (module docstring): `localized`, nuisance off, linear label, a marker channel."""
    bench = make_synthetic(SyntheticConfig(variant="localized", seed=seed, n_train=n_train, n_valid=n_valid,
                                           n_test=n_test, seq_len=SEQ_LEN, event_steps=EVENT_STEPS,
                                           dims=(FEATURES, FEATURES), nuisance_scale=0.0, label_nonlinearity=0.0))
    rng = np.random.default_rng([seed, 20])
    splits = {}
    for name, split in bench.splits.items():
        features = {}
        for m in bench.modalities:
            event = bench.meta["event_mask"][name][m]                               # (N, T) bool
            x = split.features[m].copy()
            x += (~event)[:, :, None] * rng.normal(0.0, background_noise, x.shape).astype(np.float32)
            features[m] = np.concatenate([x, event[:, :, None].astype(np.float32)], 2)
        splits[name] = Split(features=features, masks=dict(split.masks), labels=split.labels)
    out = Benchmark(name="control", modalities=bench.modalities, splits=splits, num_classes=2,
                    meta={**bench.meta, "source": "control"})
    return validate_benchmark(out, source="control")


def control_config(**changes) -> S3Config:
    """The config the hand-built model has (S3Config fields; `changes` e.g. prune_scope)."""
    d_in = FEATURES + 1
    return S3Config(d_model=4 * d_in, n_layers=1, n_heads=4, d_ff=d_in, chi=1, rho=2, proj_dim=d_in,
                    keep_ratios=KEEP_RATIOS, batch_size=128, epoch_probe=False).replace(**changes)


@torch.no_grad()
def control_model(data: BenchmarkTensors, cfg: S3Config | None = None) -> S3Model:
    """The hand-built S3Model (module docstring) for `data` (control_benchmark's tensors)."""
    cfg = cfg or control_config()
    d_in = FEATURES + 1
    D = cfg.d_model
    a, a_neg, b, b_neg = (slice(i * d_in, (i + 1) * d_in) for i in range(4))
    feat = torch.arange(FEATURES)
    model = S3Model(data.dims, data.seq_lens, cfg)
    for m, enc in model.encoders.items():
        for p in enc.parameters():
            p.zero_()
        # input: undo standardise() (x_std * std + mean = raw), marker scaled, mirrored
        scale = data.feature_std[m].clone().float()
        shift = data.feature_mean[m].clone().float()
        scale[-1], shift[-1] = scale[-1] * MARKER, shift[-1] * MARKER
        enc.input_proj.weight[a] = torch.diag(scale)
        enc.input_proj.weight[a_neg] = -torch.diag(scale)
        enc.input_proj.bias[a], enc.input_proj.bias[a_neg] = shift, -shift
        block = enc.blocks[0]                      # attention: qkv and attn_out stay zero
        for ln in (block.ln1, block.ln2):
            ln.weight.fill_(1.0)
        ffn = block.ffn
        ffn.router.weight[0, d_in - 1] = ROUTER_GAIN   # expert 0 <- the marker; expert 1 <- nothing
        for e in range(ffn.cfg.num_experts):           # every expert copies A's features into B
            ffn.w1[e, feat, feat] = 1.0
            ffn.b1[e, feat] = GELU_OFFSET
            ffn.w2[e, feat, b.start + feat] = 1.0
            ffn.w2[e, feat, b_neg.start + feat] = -1.0
            ffn.b2[e, b.start + feat] = -GELU_OFFSET
            ffn.b2[e, b_neg.start + feat] = GELU_OFFSET
        enc.ln_f.weight[b] = 1.0                   # keep B only (and its mirror)
        enc.ln_f.weight[b_neg] = 1.0
        first, last = enc.head[0], enc.head[2]
        first.weight[feat, b.start + feat] = 1.0
        first.bias[feat] = GELU_OFFSET
        last.weight[feat, feat] = 1.0
        last.bias[feat] = -GELU_OFFSET
        assert D == 4 * d_in
    return model.eval()


def check_curve(curve: list[dict], min_rise: float = 0.03, min_fall: float = 0.05) -> list[str]:
    """What is wrong with a control curve (empty: it shows the inverted U and validation finds it).

    - the best test accuracy over 0.1 <= p <= 0.3 beats p = 1 by `min_rise`;
    - the smallest p's test accuracy lies `min_fall` below that best;
    - the validation-chosen p lies in [0.1, 0.3] (the event share is 0.2).
    """

    by_p = {r["keep_ratio"]: r for r in curve}
    problems = []
    mid = [r for r in curve if 0.1 <= r["keep_ratio"] <= 0.3]
    peak = max(r["test_acc"] for r in mid)
    full, low = by_p[1.0]["test_acc"], by_p[min(by_p)]["test_acc"]
    if peak < full + min_rise:
        problems.append(f"no rise: best test acc over p in [0.1, 0.3] {peak:.3f} vs {full:.3f} at p = 1")
    if low > peak - min_fall:
        problems.append(f"no fall: test acc {low:.3f} at p = {min(by_p)} vs peak {peak:.3f}")
    chosen = choose_on_valid(curve)["keep_ratio"]
    if not 0.1 <= chosen <= 0.3:
        problems.append(f"validation chose p = {chosen}, outside [0.1, 0.3]")
    return problems


def control_curve(seed: int = 0, prune_scope: str = "batch", keep_ratios=KEEP_RATIOS, **bench_kw) -> list[dict]:
    """Stage 3 (`sparsify`) on the hand-built model: the control's curve at `keep_ratios`."""

    data = to_tensors(control_benchmark(seed, **bench_kw))
    cfg = control_config(prune_scope=prune_scope, seed=seed, keep_ratios=keep_ratios)
    return sparsify(control_model(data, cfg), data, cfg, progress=False)


def main(argv=None) -> int:
    """python -m s3core.control [--seeds 0 1 2] [--plot docs/positive_control.png]: the curves."""

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--plot", default=None, help="write a PNG of test/valid accuracy against p")
    args = ap.parse_args(argv)
    curves = {}
    for scope in ("batch", "threshold"):
        for seed in args.seeds:
            curve = control_curve(seed, scope)
            curves[(scope, seed)] = curve
            print(f"{scope} seed {seed}: " + "  ".join(f"p={r['keep_ratio']:g} {100 * r['test_acc']:.1f}"
                                                        f"/{100 * r['valid_acc']:.1f}" for r in curve)
                  + f"   problems: {check_curve(curve) or 'none'}")
    if args.plot:
        import matplotlib   # only for --plot: the control itself needs no plotting library
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt   # (--plot only, as above)

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, scope in zip(axes, ("batch", "threshold")):
            for seed in args.seeds:
                c = curves[(scope, seed)]
                ps = [r["keep_ratio"] for r in c]
                ax.plot(ps, [100 * r["test_acc"] for r in c], "o-", label=f"test, seed {seed}")
                ax.plot(ps, [100 * r["valid_acc"] for r in c], "x--", alpha=0.6, label=f"valid, seed {seed}")
            ax.set_xscale("log")
            ax.set_xlabel("keep-ratio p (log)")
            ax.set_title(f"positive control, prune scope '{scope}'")
            ax.axvline(EVENT_STEPS / SEQ_LEN, color="grey", lw=0.8, ls=":")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

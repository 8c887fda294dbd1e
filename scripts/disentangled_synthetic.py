"""DisentangledSSL's own synthetic task (issue 21.4): their code and ours on the same data, same seeds.

Reference: github.com/uhlerlab/DisentangledSSL at commit cda29ec29bf8ad85344637f643a372ba8e74363e,
`synthetic_task/`. Their code is never copied into the project: `make` and `theirs` extract the
snapshot (git archive of that commit) under --out and import its modules in a throw-away venv
(--authors-python, default /tmp/authors-venv/bin/python: torch, numpy, scikit-learn), which
runs scripts/disentangled_synthetic_authors.py there (`_make_inner`, `_theirs_inner`).

Their task (`dataset.generate_data`, called as their scripts call it, `generate_data(num_data, 256,
dim_info, weight_info, label_weight_info1..3, seed)` with their argparse defaults): Z1, Zs, Z2 each 50-d
Gaussian (variance 0.5); X = [Z1; Zs] T1, Y = [Z2; Zs] T2 with T uniform(-1, 1), both 100-d vectors;
three binary labels, each the median split of a fixed random 2-layer MLP (torch seed 0, 1, 2) plus
N(0, 0.1) noise on one factor: label 1 of Z1 (unique to X), label 2 of Zs (shared), label 3 of Z2 (unique
to Y), so every label is balanced. num_data 90000; their split: torch.manual_seed(0), random_split 80/20
into train / test (no validation split).

Subcommands (run from the repository root with the project's venv; every run single-threaded):
    make   --seed S [--num-data N]         their generator at data seed S -> <out>/data/seed{S}/
           label{1,2,3}.npz in s3core's `arrays` layout (s3core/data/arrays.py: train_x, train_y,
           train_labels, ...; a vector is read as a length-1 sequence), their raw arrays (raw.npz),
           and make.json (repo, commit, the generator call, seed).
    theirs --seeds S.. [--epochs E]          their FOCAL (`algorithms.Focal.train_model_focal`), JointOpt
           (`JointDisenModel.train_model`) and DisentangledSSL (`step1disen.train_mp`, then the calls of
           `step2disen.train_step2`, keeping the model) on data seed S with training seed S -> <out>/theirs.json: every
           accuracy their own code logs, and (column `concat`) LogisticRegression(max_iter=200) on the
           concatenation of all the parts their `get_embedding` returns, which is our probe's protocol.
    ours   --seeds S.. [--epochs E] [--set FIELD=VALUE..]  `python -m s3core --benchmark arrays --data-dir labelK.npz
           --method M --seed S --set probe=factorcl probe_max_iter=200 ...` for the four InfoMax methods
           -> <out>/ours.json. --epochs E trains as long as `theirs --epochs E` (`epoch_flags`:
           DisentangledSSL E + E for its two steps, the one-step methods E).
    table  both side by side, mean +- std over seeds, per label -> printed and <out>/table.md
           (scripts/disentangled_synthetic_report.py, the report half).

What is the same: the data and its split (train = their train, test = their test, to the sample),
the seeds (data seed = training seed = S), the probe (scikit-learn LogisticRegression, C = 1,
max_iter 200, on the raw embedding, fitted on train, scored on test: our `probe=factorcl`), the
batch size (256, their default) and the InfoMax weights at their scripts' defaults (DisentangledSSL
beta 0.1, lambda 0; JointOpt a 1, lambda 0; vMF kappa 1e3; temperature 0.07).
What differs (docs/METHOD_NOTES.md, "InfoMax baselines (issue 21)"):
- encoder: theirs MLPs (100 -> 512 -> [512 ->] 100, ReLU; `layers` 3 for FOCAL / JointOpt, 2 for
  DisentangledSSL's two models), one per part; ours the project's dense encoder on a length-1
  sequence, shared and private parts as halves of one projection (equal active parameters to clip).
- FOCAL: theirs here is uhlerlab's simplified `Focal` (shared InfoNCE + a * private InfoNCE + lmd *
  orthogonality, a 1, lmd 0); ours follows tomoyoshki/focal (orthogonality weight 3).
- epochs and optimiser: theirs Adam lr 1e-4, cosine schedule, 50 epochs (step 2: 30); ours the
  project's optimiser, epochs_special (+ epochs_select for DisentangledSSL step 2), set with --set.
- augmentation: theirs `augment_data` (per sample one of noise 0.01, dropping a tenth of the
  features, identity); ours the project's `augment` on the length-1 sequence.
- validation: their task has none; ours needs one, so valid = the first --valid-frac of their train
  (a subset of train, not held out). The InfoMax methods with epoch_probe off and the factorcl probe
  never read it; S3 would choose p on it, so do not run S3 on these files.
- the probe: theirs probes each part alone (shared [e1; e2], specific z1, z2); ours the
  concatenation. `theirs.json` holds both, `table` shows their concatenation beside ours.
- DisentangledSSL step 2 loads the step-1 model trained at seed 0 whatever its own seed (the file
  name in `step2disen.train_step2` says seed0): kept, so step 1 always trains at seed 0 on data seed S.
- FactorCL has no code in their synthetic_task: ours alone.

Smoke (run on the shared 2-core machine, single thread, while a CPU study ran):
    python scripts/disentangled_synthetic.py make --out /tmp/i21c/dssl --seed 0 --num-data 600      1.8 s
    python scripts/disentangled_synthetic.py theirs --out /tmp/i21c/dssl --seeds 0 --epochs 2       7.3 s (3 methods)
    python scripts/disentangled_synthetic.py ours --out /tmp/i21c/dssl --seeds 0 --labels 1 \
        --epochs-special 2 --epochs-select 1 --set factorcl_critic_hidden=64
                                    30 s: 4.4-6.3 s per method, factorcl 13.9 s (61 s at its default
                                    critic width 512; the presets use 64 for cost)
    python scripts/disentangled_synthetic.py table --out /tmp/i21c/dssl                              0.3 s
The study (docs/RESULTS.md, "Their own synthetic task"): --num-data 20000, --epochs 30, seeds 0-4, on the
same machine with two processes at a time: `make` 2.1-2.5 s per seed; `theirs` 136-169 s (DisentangledSSL),
200-238 s (JointOpt), 190-297 s (FOCAL) per seed; `ours --train-once` at the library's defaults 54-114 s per
method and seed (the three labels probed); at --set d_model=512 d_ff=512 proj_dim=200 (their widths)
335-395 s alone beside one other process, 710-770 s with two others. `ours --train-once` reproduced
the per-label `python -m s3core` runs exactly (15 of 15 test accuracies equal, seeds 0-1).
Sizing (same machine): `make --num-data 5000` 3.0 s; on it `theirs --epochs 1` 3.4-4.1 s and
`--epochs 4` 11.3-12.9 s per method (training + their probes), so about 2.8 s per epoch at 4000
train samples (15 batches of 256); `ours --epochs-special 1 --epochs-select 1` 9-10 s per method
(label 2, FactorCL not run, process start and probe included). Their defaults (72000 train samples,
281 batches per epoch, 50 epochs; DisentangledSSL 50 + 30) extrapolate to about 35-45 minutes per
method and seed there, about 10 hours for theirs at 5 seeds (not measured at that size).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np

REPO = "uhlerlab/DisentangledSSL"
COMMIT = "cda29ec29bf8ad85344637f643a372ba8e74363e"
MIRROR = "/work/.mirror/uhlerlab+DisentangledSSL/repo"
AUTHORS_PYTHON = "/tmp/authors-venv/bin/python"
HERE = os.path.dirname(os.path.abspath(__file__))
AUTHORS_SIDE = os.path.join(HERE, "disentangled_synthetic_authors.py")   # what runs in their venv
ROOT = os.path.dirname(HERE)
OURS = ("disentangled_ssl", "joint_opt", "focal", "factorcl")
THEIRS = ("disentangled_ssl", "joint_opt", "focal")
REFERENCES = ("raw_probe",)   # no training: the probe on the raw features, the floor every method should clear
LABELS = (1, 2, 3)
# Ours' side of "the same probe" (LogisticRegression(max_iter=200) on the raw embedding), for both
# `ours` paths: `python -m s3core --set ...` and the in-process `_ours_once`.
PROBE_FIELDS = {"probe": "factorcl", "probe_max_iter": 200, "epoch_probe": False}
LABEL_FACTOR = {1: "Z1 (unique to X)", 2: "Zs (shared)", 3: "Z2 (unique to Y)"}

# Their argparse defaults (synthetic_task/*.py at COMMIT), the values their scripts/ pass over them.
GENERATOR = {"hidden_dim": 256, "dim_info": {"Y": 100, "Z1": 50, "Zs": 50, "X": 100, "Z2": 50},
             "weight_info": {"Zs": 50, "Z1": 50, "Z2": 50},
             "label_weight_info1": {"Zs": 0, "Z1": 50, "Z2": 0},
             "label_weight_info2": {"Zs": 50, "Z1": 0, "Z2": 0},
             "label_weight_info3": {"Zs": 0, "Z1": 0, "Z2": 50}}
THEIR_ARGS = {"data_mode": "entangle", "hidden_dim": 512, "embed_dim": 100, "layers": 3, "activation": "relu",
              "batch_size": 256, "num_epoch": 50, "num_epoch_s1": 50, "num_epoch_s2": 30, "lr": 1e-4,
              "lr_s1": 1e-4, "lr_s2": 1e-4, "kappa": 1e3, "noise_scale": 0.01, "drop_scale": 10,
              "ortho_norm": True, "condzs": True, "proj": False, "apdzs": True, "usezsx": False,
              "head": "none", "simclr": False, "debug_mode": False, "custom_name": "",
              "focal_a": 1.0, "focal_lmd": 0.0, "joint_a": 1.0, "joint_lmd": 0.0,
              "dssl_beta": 0.1, "dssl_lmd": 0.0}


class UsageError(SystemExit):
    pass


def single_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": ""}


# ---------------------------------------------------------------- the arrays layout (tested)
def arrays_layout(x: np.ndarray, y: np.ndarray, labels: np.ndarray, train_idx, valid_idx, test_idx) -> dict:
    """Their two vector modalities and one label as s3core's `arrays` .npz keys (modalities 'x', 'y')."""
    out = {}
    for split, idx in (("train", train_idx), ("valid", valid_idx), ("test", test_idx)):
        idx = np.asarray(idx, dtype=np.int64)
        out[f"{split}_x"] = np.ascontiguousarray(x[idx], dtype=np.float32)
        out[f"{split}_y"] = np.ascontiguousarray(y[idx], dtype=np.float32)
        out[f"{split}_labels"] = np.asarray(labels[idx]).astype(np.int64)
    return out


def valid_subset(train_idx: np.ndarray, frac: float) -> np.ndarray:
    """The first `frac` of their train indices (at least 2): a validation split our loader needs and
    their task does not have; a subset of train, not held out (module docstring)."""
    if not 0 < frac <= 1:
        raise UsageError(f"--valid-frac must be in (0, 1], got {frac}")
    return np.asarray(train_idx[: max(2, int(round(frac * len(train_idx))))])


def extract_snapshot(out: str, mirror: str) -> str:
    """git archive of COMMIT's synthetic_task/ into <out>/snapshot; returns that folder."""
    dest = os.path.join(out, "snapshot")
    task = os.path.join(dest, "synthetic_task")
    if os.path.isdir(task):
        return task
    if not os.path.isdir(mirror):
        raise UsageError(f"{mirror}: no snapshot of {REPO}; fetch github:{REPO} and pass --mirror <its git dir>")
    os.makedirs(dest, exist_ok=True)
    tar_path = os.path.join(dest, "synthetic_task.tar")
    with open(tar_path, "wb") as fh:
        subprocess.run(["git", f"--git-dir={mirror}", "archive", COMMIT, "synthetic_task"], stdout=fh, check=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    os.remove(tar_path)
    return task


def run_authors(args, sub: str, extra: list[str]) -> None:
    if not os.path.exists(args.authors_python):
        raise UsageError(f"{args.authors_python}: no such python; make a throw-away venv with torch, numpy and "
                         "scikit-learn and pass --authors-python")
    task = extract_snapshot(args.out, args.mirror)
    subprocess.run([args.authors_python, AUTHORS_SIDE, sub, "--task", task, "--out", args.out, *extra],
                   env=single_thread_env(), check=True)


def read_json(path: str) -> dict:
    """A results file, or {} where there is none yet."""
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh)


def seed_dir(out: str, seed: int) -> str:
    return os.path.join(out, "data", f"seed{seed}")


# ---------------------------------------------------------------- make
def cmd_make(args) -> None:
    t0 = time.time()
    run_authors(args, "_make_inner", ["--seed", str(args.seed), "--num-data", str(args.num_data)])
    d = seed_dir(args.out, args.seed)
    with np.load(os.path.join(d, "raw.npz"), allow_pickle=False) as raw:
        x, y, train_idx, test_idx = raw["X"], raw["Y"], raw["train_idx"], raw["test_idx"]
        labels = {k: raw[f"labels{k}"] for k in LABELS}
    valid_idx = valid_subset(train_idx, args.valid_frac)
    for k in LABELS:
        np.savez(os.path.join(d, f"label{k}.npz"), **arrays_layout(x, y, labels[k], train_idx, valid_idx, test_idx))
    meta_path = os.path.join(d, "make.json")
    with open(meta_path) as fh:
        meta = json.load(fh)
    meta.update({"valid": f"the first {len(valid_idx)} of their train indices (a subset of train)",
                 "files": {f"label{k}.npz": LABEL_FACTOR[k] for k in LABELS}, "seconds": round(time.time() - t0, 1)})
    with open(meta_path, "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"make: seed {args.seed}, {len(train_idx)} train / {len(valid_idx)} valid (subset of train) / "
          f"{len(test_idx)} test -> {d} in {meta['seconds']} s")


def cmd_theirs(args) -> None:
    path = os.path.join(args.out, "theirs.json")
    results = read_json(path)
    for seed in args.seeds:
        if not os.path.exists(os.path.join(seed_dir(args.out, seed), "raw.npz")):
            raise UsageError(f"no data for seed {seed} under {args.out}; run `make --seed {seed}` first")
        run_authors(args, "_theirs_inner", ["--seed", str(seed), "--epochs", str(args.epochs),
                                            "--methods", *args.methods])
        with open(os.path.join(seed_dir(args.out, seed), "theirs.json")) as fh:
            results[str(seed)] = json.load(fh)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    for seed in args.seeds:
        for m, r in results[str(seed)].items():
            print(f"theirs: seed {seed} {m}: concat {r['concat']} in {r['seconds']} s")


# ---------------------------------------------------------------- ours
def ours_path(out: str, tag: str) -> str:
    return os.path.join(out, f"ours_{tag}.json" if tag else "ours.json")


def cmd_ours(args) -> None:
    if args.train_once:
        return cmd_ours_once(args)
    if args.tag:
        raise UsageError("--tag goes with --train-once")
    path = ours_path(args.out, "")
    results = read_json(path)
    for seed in args.seeds:
        for k in args.labels:
            npz = os.path.join(seed_dir(args.out, seed), f"label{k}.npz")
            if not os.path.exists(npz):
                raise UsageError(f"{npz}: missing; run `make --seed {seed}` first")
            for method in args.methods:
                out_json = os.path.join(seed_dir(args.out, seed), f"ours_{method}_label{k}.json")
                cmd = [sys.executable, "-m", "s3core", "--benchmark", "arrays", "--data-dir", npz, "--method", method,
                       "--seed", str(seed), "--batch-size", "256", "--json", out_json, "--quiet",
                       *epoch_flags(method, args),
                       "--set", *(f"{k}={v}" for k, v in PROBE_FIELDS.items()), *args.set]
                t0 = time.time()
                subprocess.run(cmd, env=single_thread_env(), cwd=ROOT, check=True)
                seconds = round(time.time() - t0, 1)
                with open(out_json) as fh:
                    acc = test_accuracy(json.load(fh))
                results.setdefault(str(seed), {}).setdefault(method, {})[f"label{k}"] = acc
                results[str(seed)][method][f"seconds_label{k}"] = seconds
                print(f"ours: seed {seed} label {k} {method}: test {acc} in {seconds} s  ({' '.join(cmd[1:])})")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)


def cmd_ours_once(args) -> None:
    """--train-once: one training per (seed, method), on label 1's file, and Stage 3 (the probe at
    p = 1) on every label's file with that model (`_ours_once`). The methods are self-supervised,
    the three files differ only in their labels, so this is what three `python -m s3core` runs
    train, once (checked: `test_the_labels_do_not_reach_the_infomax_training`). Runs --jobs
    (seed, method) pairs at a time, each one process on one thread; this process alone writes."""
    from concurrent.futures import ThreadPoolExecutor

    path = ours_path(args.out, args.tag)
    results = read_json(path)
    jobs = []
    for seed in args.seeds:
        for k in LABELS:
            if not os.path.exists(os.path.join(seed_dir(args.out, seed), f"label{k}.npz")):
                raise UsageError(f"{seed_dir(args.out, seed)}/label{k}.npz: missing; run `make --seed {seed}` first")
        jobs += [(seed, method) for method in args.methods]
    suffix = f"_{args.tag}" if args.tag else ""

    def one(job):
        seed, method = job
        out_json = os.path.join(seed_dir(args.out, seed), f"ours{suffix}_{method}_once.json")
        cmd = [sys.executable, os.path.abspath(__file__), "_ours_once", "--out", args.out, "--seed", str(seed),
               "--method", method, "--json", out_json, *epoch_flags(method, args), "--set", *args.set]
        t0 = time.time()
        subprocess.run(cmd, env=single_thread_env(), cwd=ROOT, check=True)
        with open(out_json) as fh:
            return job, json.load(fh), round(time.time() - t0, 1)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (seed, method), accs, seconds in pool.map(one, jobs):
            results.setdefault(str(seed), {})[method] = {**accs, "seconds": seconds}
            print(f"ours{suffix}: seed {seed} {method}: "
                  f"{', '.join(f'{k} {v:.4f}' for k, v in accs.items() if k.startswith('label'))} in {seconds} s",
                  flush=True)
            with open(path + ".tmp", "w") as fh:     # after every pair: an interrupted run keeps what finished
                json.dump(results, fh, indent=1)
            os.replace(path + ".tmp", path)


def ours_once_inner(args) -> None:
    """One (seed, method): train on label 1's file with s3core's run_trial, then s3core's Stage 3 at
    p = 1 (`stages.sparsify`, the probe `python -m s3core` runs) on each label's file."""
    import torch

    from s3core.__main__ import _literal   # how `python -m s3core --set` reads a value
    from s3core.config import S3Config
    from s3core.data import load_for_grid
    from s3core.pipeline import method_config, run_trial
    from s3core.stages import sparsify
    from s3core.tensors import to_tensors

    torch.set_num_threads(1)
    fields = {"batch_size": 256, "seed": args.seed, **PROBE_FIELDS}
    if args.epochs_special is not None:
        fields["epochs_special"] = args.epochs_special
    if args.epochs_select is not None:
        fields["epochs_select"] = args.epochs_select
    for item in args.set:
        key, _, raw = item.partition("=")
        fields[key] = _literal(raw)
    cfg = S3Config().replace(**fields).validate()
    files = {k: os.path.join(seed_dir(args.out, args.seed), f"label{k}.npz") for k in LABELS}
    result = run_trial(load_for_grid("arrays", data_dir=files[1]), cfg, args.method, progress=False)
    out = {"label1": test_accuracy({"curve": result.curve}), "train_s": round(result.seconds, 1),
           "config": result.config}
    mcfg = method_config(cfg, args.method).validate()
    for k in LABELS[1:]:
        bench = load_for_grid("arrays", data_dir=files[k])
        if result.model is None:      # a reference without a model (raw_probe): its own run per label
            out[f"label{k}"] = test_accuracy({"curve": run_trial(bench, cfg, args.method, progress=False).curve})
            continue
        data = to_tensors(bench, mcfg.device)
        out[f"label{k}"] = test_accuracy({"curve": sparsify(result.model, data, mcfg, progress=False)})
    with open(args.json + ".tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(args.json + ".tmp", args.json)


def epoch_flags(method: str, args) -> list[str]:
    """The s3core epoch flags for one method. With --epochs E, the same epochs as `theirs --epochs E`
    (which sets their num_epoch, num_epoch_s1 and num_epoch_s2 to E): DisentangledSSL E for step 1
    (epochs_special) and E for step 2 (epochs_select); the one-step methods E in all (epochs_special E,
    epochs_select 0, since they train for epochs_special + epochs_select). Else the explicit flags."""
    if args.epochs is not None:
        if args.epochs_special is not None or args.epochs_select is not None:
            raise UsageError("give --epochs, or --epochs-special / --epochs-select, not both")
        if args.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
        select = args.epochs if method == "disentangled_ssl" else 0
        return ["--epochs-special", str(args.epochs), "--epochs-select", str(select)]
    return [*(["--epochs-special", str(args.epochs_special)] if args.epochs_special is not None else []),
            *(["--epochs-select", str(args.epochs_select)] if args.epochs_select is not None else [])]


def test_accuracy(summary: dict) -> float:
    """The test accuracy at p = 1 from `python -m s3core --json` (the InfoMax methods do not prune)."""
    curve = summary.get("curve")
    if curve:
        return float(max(curve, key=lambda r: r["keep_ratio"])["test_acc"])
    raise UsageError(f"no test accuracy in the s3core summary (keys {sorted(summary)})")


# ---------------------------------------------------------------- CLI
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(q, authors=False):
        q.add_argument("--out", required=True, help="working folder (data, snapshot, results)")
        if authors:
            q.add_argument("--authors-python", default=AUTHORS_PYTHON, help="python of the throw-away venv")
            q.add_argument("--mirror", default=MIRROR, help=f"git dir of the {REPO} snapshot")
        return q

    q = common(sub.add_parser("make", help="their generator -> arrays .npz"), authors=True)
    q.add_argument("--seed", type=int, required=True)
    q.add_argument("--num-data", type=int, default=90000, help="their default 90000")
    q.add_argument("--valid-frac", type=float, default=0.1, help="valid = this first share of their train")
    q = common(sub.add_parser("theirs", help="their FOCAL, JointOpt, DisentangledSSL"), authors=True)
    q.add_argument("--seeds", type=int, nargs="+", required=True)
    q.add_argument("--epochs", type=int, default=50, help="their default 50 (step 2 of DisentangledSSL: 30)")
    q.add_argument("--methods", nargs="+", default=list(THEIRS), choices=THEIRS)
    q = common(sub.add_parser("ours", help="python -m s3core on the same files"))
    q.add_argument("--seeds", type=int, nargs="+", required=True)
    q.add_argument("--labels", type=int, nargs="+", default=list(LABELS), choices=LABELS)
    q.add_argument("--methods", nargs="+", default=list(OURS), choices=OURS + REFERENCES)
    q.add_argument("--epochs", type=int, default=None,
                   help="the epochs of `theirs --epochs E`, split per method as theirs does (epoch_flags)")
    q.add_argument("--epochs-special", type=int, default=None, help="default: the library's")
    q.add_argument("--epochs-select", type=int, default=None, help="DisentangledSSL step 2 (default: the library's)")
    q.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="more S3Config fields (not epochs_*: python -m s3core refuses them twice)")
    q.add_argument("--train-once", action="store_true",
                   help="train once per seed and method, probe every label with that model (cmd_ours_once)")
    q.add_argument("--tag", default="", help="with --train-once: results in ours_<tag>.json (another setting)")
    q.add_argument("--jobs", type=int, default=1, help="with --train-once: (seed, method) pairs run at a time")
    q = common(sub.add_parser("_ours_once", help=argparse.SUPPRESS))
    q.add_argument("--seed", type=int, required=True)
    q.add_argument("--method", required=True, choices=OURS + REFERENCES)
    q.add_argument("--json", required=True)
    q.add_argument("--epochs-special", type=int, default=None)
    q.add_argument("--epochs-select", type=int, default=None)
    q.add_argument("--set", nargs="*", default=[])
    q = common(sub.add_parser("table", help="both side by side"))
    q.add_argument("--tags", nargs="*", default=[], help="also these `ours --train-once --tag` settings")
    q.add_argument("--plot", default=None, metavar="PNG", help="also a bar chart of the table (plot_table)")
    args = p.parse_args(argv)
    if args.cmd == "table":
        from disentangled_synthetic_report import cmd_table   # the report half; it imports this module
        return cmd_table(args)
    {"make": cmd_make, "theirs": cmd_theirs, "ours": cmd_ours, "_ours_once": ours_once_inner}[args.cmd](args)


if __name__ == "__main__":
    main()

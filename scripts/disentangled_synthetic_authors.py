"""The half of scripts/disentangled_synthetic.py that runs inside the authors' throw-away venv: it
imports their modules from the extracted snapshot (`--task`), so it needs only what their code needs
(torch, numpy, scikit-learn) plus the stdlib-and-numpy constants and helpers of
scripts/disentangled_synthetic.py. Called by that script's `make` and `theirs`, never by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from disentangled_synthetic import COMMIT, GENERATOR, LABELS, REPO, THEIR_ARGS, THEIRS, seed_dir  # noqa: E402


def _import_theirs(task: str):
    """Their modules, importable and on the CPU: sys.path to the snapshot, .cuda() as the identity."""
    import torch  # the authors' venv only: this file's module top must import under both venvs

    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, task)
    return torch


def cmd_make_inner(args) -> None:
    torch = _import_theirs(args.task)
    import dataset as their_dataset  # the snapshot's synthetic_task/dataset.py, on sys.path only now

    g = GENERATOR
    data, t1, t2, t3, X, Y, *_ = their_dataset.generate_data(
        args.num_data, g["hidden_dim"], g["dim_info"], g["weight_info"], g["label_weight_info1"],
        g["label_weight_info2"], g["label_weight_info3"], seed=args.seed)
    n = data.shape[1]
    torch.manual_seed(0)  # their scripts: "fix the seed for train-test spliting"
    train, test = torch.utils.data.random_split(their_dataset.MultimodalDataset(data, t1, t2, t3),
                                                [int(0.8 * n), n - int(0.8 * n)])
    d = seed_dir(args.out, args.seed)
    os.makedirs(d, exist_ok=True)
    np.savez(os.path.join(d, "raw.npz"), X=X.astype(np.float32), Y=Y.astype(np.float32),
             labels1=t1.astype(np.int64), labels2=t2.astype(np.int64), labels3=t3.astype(np.int64),
             train_idx=np.asarray(train.indices, dtype=np.int64), test_idx=np.asarray(test.indices, dtype=np.int64))
    with open(os.path.join(d, "make.json"), "w") as fh:
        json.dump({"repo": REPO, "commit": COMMIT, "seed": args.seed, "num_data": args.num_data,
                   "generator_call": f"synthetic_task/dataset.py generate_data({args.num_data}, {g['hidden_dim']}, "
                                     f"dim_info, weight_info, label_weight_info1, label_weight_info2, "
                                     f"label_weight_info3, seed={args.seed})", "generator_args": g,
                   "split": "torch.manual_seed(0); torch.utils.data.random_split(dataset, [int(0.8*n), n-int(0.8*n)])",
                   "torch": torch.__version__}, fh, indent=1)


# ---------------------------------------------------------------- theirs
def cmd_theirs_inner(args) -> None:
    torch = _import_theirs(args.task)
    import algorithms  # the snapshot's synthetic_task/, importable only after _import_theirs
    import dataset as their_dataset  # the snapshot's, as above
    import step1disen  # the snapshot's, as above
    from sklearn.linear_model import LogisticRegression  # the authors' venv's scikit-learn, as their probe

    d = seed_dir(args.out, args.seed)
    with np.load(os.path.join(d, "raw.npz"), allow_pickle=False) as raw:
        X, Y, train_idx, test_idx = raw["X"], raw["Y"], raw["train_idx"], raw["test_idx"]
        labels = [raw[f"labels{k}"].astype(float) for k in LABELS]
    ds = their_dataset.MultimodalDataset(np.array([X, Y]), *labels)
    train_ds = torch.utils.data.Subset(ds, train_idx.tolist())
    test_ds = torch.utils.data.Subset(ds, test_idx.tolist())
    a = argparse.Namespace(**THEIR_ARGS, dim_info=GENERATOR["dim_info"], seed=args.seed, device="")
    a.num_epoch = a.num_epoch_s1 = a.num_epoch_s2 = args.epochs
    xs_tr = torch.stack(train_ds[:][:-3])
    xs_te = torch.stack(test_ds[:][:-3])

    def loader():
        return torch.utils.data.DataLoader(train_ds, shuffle=True, drop_last=True, batch_size=a.batch_size)

    def concat_probe(parts_tr, parts_te) -> dict:
        """Our protocol on their embedding: one LogisticRegression(max_iter=200) on all parts side by side."""
        z_tr = torch.cat(parts_tr, dim=1).detach().numpy()
        z_te = torch.cat(parts_te, dim=1).detach().numpy()
        return {f"label{k}": float(LogisticRegression(max_iter=200).fit(z_tr, labels[k - 1][train_idx])
                                   .score(z_te, labels[k - 1][test_idx])) for k in LABELS}

    work = os.path.join(d, "theirs_work")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)  # step1disen / step2disen save and load under ./results_synthetic_task/
    out = {}
    for method in args.methods:
        t0 = time.time()
        step1disen.set_seed(args.seed, use_cuda=False)
        if method == "focal":
            model = algorithms.Focal(X.shape[1], Y.shape[1], a.hidden_dim, a.embed_dim, a.layers, a.activation,
                                     initialization="normal", a=a.focal_a, lmd=a.focal_lmd)
            logs = model.train_model_focal(loader(), train_ds, test_ds, torch.optim.Adam(model.parameters(), lr=a.lr),
                                           num_epoch=a.num_epoch, noise_scale=a.noise_scale, drop_scale=a.drop_scale)
        elif method == "joint_opt":
            model = algorithms.JointDisenModel(
                X.shape[1], Y.shape[1], a.hidden_dim, a.embed_dim, a.layers, a.activation, initialization="normal",
                distribution="vmf", vmfkappa=a.kappa, lr=a.lr, lmd_start_value=a.joint_lmd, lmd_end_value=a.joint_lmd,
                lmd_n_iterations=8000, lmd_start_iteration=0, a=a.joint_a, ortho_norm=a.ortho_norm, condzs=a.condzs,
                proj=a.proj, usezsx=a.usezsx, apdzs=a.apdzs)
            logs = model.train_model(loader(), train_ds, test_ds, torch.optim.Adam(model.parameters(), lr=a.lr),
                                     num_epoch=a.num_epoch, noise_scale=a.noise_scale, drop_scale=a.drop_scale)
        elif method == "disentangled_ssl":
            a.beta = a.beta_start = a.beta_end = a.dssl_beta
            a.lmd_start = a.lmd_end = a.dssl_lmd
            os.environ["CUDA_VISIBLE_DEVICES"] = "cpu"  # step1disen prints it
            a.seed = 0  # step2disen.train_step2 loads the step-1 model of seed 0 (module docstring)
            step1disen.set_seed(0, use_cuda=False)
            logs1 = step1disen.train_mp(a, loader(), None, train_ds, test_ds)
            a.seed = args.seed
            step1disen.set_seed(args.seed, use_cuda=False)
            # step2disen.train_step2's own calls (it returns only its logs), keeping the models for the concat probe
            step1_path = os.path.join(f"./results_synthetic_task/{a.data_mode}/models/",
                                      f"cib_{a.data_mode}_seed0_beta{a.beta}_kappa{int(a.kappa)}_epoch{a.num_epoch_s1}"
                                      f"_dim{a.embed_dim}.tar")
            step1 = algorithms.MVInfoMaxModel(
                X.shape[1], Y.shape[1], a.hidden_dim, a.embed_dim, initialization="normal", distribution="vmf",
                vmfkappa=a.kappa, beta_start_value=a.beta_start, beta_end_value=a.beta_end, beta_n_iterations=8000,
                beta_start_iteration=0)
            step1.load_state_dict(torch.load(step1_path))
            model = algorithms.DisenModel(
                step1, X.shape[1], Y.shape[1], a.hidden_dim, a.embed_dim, zs_dim=a.embed_dim, initialization="normal",
                lmd_start_value=a.lmd_start, lmd_end_value=a.lmd_end, lmd_n_iterations=8000, lmd_start_iteration=0,
                ortho_norm=a.ortho_norm, condzs=a.condzs, proj=a.proj, usezsx=a.usezsx, apdzs=a.apdzs)
            logs = algorithms.train_Disen(model, loader(), torch.optim.Adam(model.parameters(), lr=a.lr_s2), train_ds,
                                          test_ds, num_epoch=a.num_epoch_s2, noise_scale=a.noise_scale,
                                          drop_scale=a.drop_scale)
            logs = {**{f"step1 {k}": v for k, v in logs1.items()}, **logs}
        out[method] = {"their_logs": {k: float(v) for k, v in logs.items()}, "seconds": None}
        model.eval()
        with torch.no_grad():
            parts_tr, parts_te = list(model.get_embedding(xs_tr)), list(model.get_embedding(xs_te))
            if method == "disentangled_ssl":  # shared (step 1, [e1; e2]) beside the specific parts (step 2)
                parts_tr.insert(0, model.zsmodel.get_embedding(xs_tr))
                parts_te.insert(0, model.zsmodel.get_embedding(xs_te))
            out[method]["concat"] = concat_probe(parts_tr, parts_te)
        out[method]["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(d, "theirs.json"), "w") as fh:
        json.dump(out, fh, indent=1)



def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("_make_inner", "_theirs_inner"):
        q = sub.add_parser(name)
        q.add_argument("--task", required=True)
        q.add_argument("--out", required=True)
        q.add_argument("--seed", type=int, required=True)
        q.add_argument("--num-data", type=int, default=90000)
        q.add_argument("--epochs", type=int, default=50)
        q.add_argument("--methods", nargs="+", default=list(THEIRS))
    args = p.parse_args(argv)
    {"_make_inner": cmd_make_inner, "_theirs_inner": cmd_theirs_inner}[args.cmd](args)


if __name__ == "__main__":
    main()

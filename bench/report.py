"""Markdown report for bench results (bench/RESULTS.md)."""
from __future__ import annotations

import os

from .common import fmt_ms, fmt_ratio
from .orchestration import PENDING
from .probe_bench import probe_report
from .queue_bench import queue_report
from .stage_reuse import stage_reuse_report

TITLES = {"moe": "1. MoE FFN vs dense FFN (forward + backward)",
          "pruning": "2. Pruning buys speed: inference time vs keep-ratio p",
          "data": "3. Data: MultiBench pickle vs the Arrow cache",
          "orchestration": "4. Orchestration overhead",
          "probe": "5. Linear probe backend: torch L-BFGS vs scikit-learn"}
CPU_TARGET, GPU_TARGET, PRUNE_TARGET, CACHE_TARGET = 1.5, 1.3, 0.6, 10.0


def _r(st: dict) -> str:
    return f"{fmt_ratio(st['ratio'])} ({st['ratio_min']:.2f}-{st['ratio_max']:.2f})"


def _moe(rows: list[dict], gpu: bool) -> list[str]:
    L = ["Forward + backward (`out.sum().backward()`) of one FFN layer on the same input tensor, "
         "MoE: rho = 4, top_k = chi, N_expert = chi * rho experts of hidden width d_ff / chi (equal "
         "active parameters to the dense FFN D -> d_ff -> D, GELU). Each cell: MoE time / dense time, "
         "median over interleaved rounds (min-max over rounds in brackets); dense ms is the dense "
         "FFN's median. `fused` is what `dispatch=\"auto\"` now picks on the CPU (**after**); "
         "`grouped_mm` was the CPU default before this change (**before**); `loop` is the naive "
         "per-expert Python loop (reference, fewer rounds).", ""]
    sizes = []
    for r in rows:
        if r["size"] not in sizes:
            sizes.append(r["size"])
    verdicts = []
    for size in sizes:
        rs = [r for r in rows if r["size"] == size]
        r0 = rs[0]
        L += [f"**{size}**: d_model {r0['d_model']}, d_ff {r0['d_ff']}, {r0['tokens']} tokens, "
              f"{r0['stats']['dense']['rounds']} rounds ({r0['stats']['loop']['rounds']} for loop)", "",
              "| chi | experts x hidden | dense ms | fused = auto (after) | grouped_mm (before) | loop (reference) |",
              "|---|---|---|---|---|---|"]
        for r in rs:
            s = r["stats"]
            L.append(f"| {r['chi']} | {r['experts']} x {r['expert_hidden']} | {fmt_ms(s['dense']['median_s'])} | "
                     f"{_r(s['fused'])} | {_r(s['grouped_mm'])} | {_r(s['loop'])} |")
            if r["chi"] == 8 and r["tokens"] >= 16000:
                ok = s["fused"]["ratio"] <= CPU_TARGET
                verdicts.append(f"- CPU, chi = 8, {size} ({r['tokens']} tokens): fused (auto) "
                                f"{fmt_ratio(s['fused']['ratio'])} of dense, target <= {CPU_TARGET}x: "
                                f"**{'met' if ok else 'missed'}** (before: grouped_mm "
                                f"{fmt_ratio(s['grouped_mm']['ratio'])}, loop {fmt_ratio(s['loop']['ratio'])})")
        L.append("")
        mem = [r for r in rs if r["memory"]]
        if mem:
            kinds = list(mem[0]["memory"])
            L += ["Peak memory of one forward + backward (MiB): the process's peak RSS during the step "
                  "(VmHWM, reset just before it) minus its RSS just before it, one fresh subprocess per cell (so it counts "
                  "saved activations, temporaries and gradients as the OS sees them; an upper bound "
                  "of live tensor memory, since the allocator may keep freed pages).", "",
                  "| chi | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
            for r in mem:
                L.append(f"| {r['chi']} | " + " | ".join(
                    f"{r['memory'][k]['delta_mib']:.0f}" + (f" ({r['memory'][k]['delta_mib'] / max(r['memory']['dense']['delta_mib'], 1):.1f}x)" if k != "dense" else "")
                    for k in kinds) + " |")
            L.append("")
    L += ["Targets:"] + (verdicts or ["- (no chi = 8 row with >= 16k tokens in this run)"])
    L.append(f"- GPU, chi = 8, target <= {GPU_TARGET}x: " + ("see the GPU rows" if gpu else
             "**not measured: no GPU on this machine**"))
    L.append("")
    return L


def _pruning(p: dict) -> list[str]:
    s = p["setup"]
    ks = p["keep_ratios"]
    disp = list(p["layer"])
    L = [f"Inference (`torch.inference_mode()`), chi {s['chi']}, rho {s['rho']}, d_model {s['d_model']}, "
         f"d_ff {s['d_ff']}, {s['tokens']} tokens ({s['seq']} steps per sample). Each cell: time at p / "
         "time at p = 1.0 in the same round, median over rounds (min-max). Encoder: a whole "
         f"`ModalityEncoder` (input {s['input_dim']} features, {s['n_layers']} blocks, 4 heads, "
         f"dispatch auto = {p.get('encoder_dispatch')}; a quarter of the samples left-padded by 10 steps).", "",
         "| p | " + " | ".join(f"MoE layer, {d}" for d in disp) + " | ModalityEncoder |",
         "|---|" + "---|" * (len(disp) + 1)]
    for k in ks:
        L.append(f"| {k} | " + " | ".join(_r(p["layer"][d][k]) for d in disp) + f" | {_r(p['encoder'][k])} |")
    L.append("")
    L.append("Milliseconds at p = 1.0: " + ", ".join(
        f"layer {d} {fmt_ms(p['layer'][d][ks[0]]['median_s'])}" for d in disp)
        + f", encoder {fmt_ms(p['encoder'][ks[0]]['median_s'])}.")
    sel = p.get("selection")
    if sel:
        L += ["", f"Choosing the kept pairs alone ({sel['num_pairs']} pairs, ms, median): `topk(n_keep)` as "
              "before, against `top_pairs`, which for p > 0.5 finds the n - n_keep lowest instead (after; "
              "the table above is after).", "",
              "| p | " + " | ".join(str(k) for k in sel["ms"]) + " |", "|---|" + "---|" * len(sel["ms"]),
              "| topk (before) | " + " | ".join(f"{v['topk']:.2f}" for v in sel["ms"].values()) + " |",
              "| top_pairs (after) | " + " | ".join(f"{v['top_pairs']:.2f}" for v in sel["ms"].values()) + " |"]
    if 0.3 in ks:
        r = p["layer"][disp[0]][0.3]["ratio"]
        L.append(f"\nTarget: MoE FFN time at p = 0.3 <= {PRUNE_TARGET}x of p = 1.0: {disp[0]} "
                 f"{fmt_ratio(r)}: **{'met' if r <= PRUNE_TARGET else 'missed'}**.")
    L.append("")
    return L


def _data(d: dict) -> list[str]:
    lo = d["loads"]
    size_gb = d["write"]["bytes"] / 1e9
    L = [f"A MOSEI-layout pickle (`mosei_senti_data.pkl`: {{train, valid, test}} x {{vision (35), audio "
         f"(74), text (300), labels, id}}, float32, {d['steps']} steps, {d['samples']} samples = "
         f"{d['splits']}, {size_gb:.2f} GB) written to a temp dir under /tmp, deleted afterwards. "
         "Every load runs in a fresh subprocess; time excludes interpreter start and imports; peak "
         "RSS is the growth of `ru_maxrss` over the peak after imports. The file was just written, so "
         "every load reads from a warm page cache (the OS cache was not dropped).", ""]
    for n in d.get("notes", []):
        L.append(f"> Note: {n}")
    if d.get("notes"):
        L.append("")
    L += ["| step | seconds (median) | peak RSS growth (MiB) | runs |", "|---|---|---|---|",
          f"| write the pickle (protocol 4, reference) | {d['write']['seconds']:.2f} | - | 1 |"]
    names = {"safe_load": "`safe_load_pickle` (restricted unpickler)",
             "pickle_load": "plain `pickle.load` (reference, our own file only)",
             "safe_load_touch": "`safe_load_pickle` + read every feature value once (float64 sum)",
             "cache_load": "Arrow cache load: `load_multibench` with the cache (memory-mapped, lazy)",
             "cache_load_touch": "Arrow cache load + read every feature value once (float64 sum)"}
    for k in ("safe_load", "pickle_load", "safe_load_touch"):
        L.append(f"| {names[k]} | {lo[k]['seconds']:.3f} | {lo[k]['delta_mib']:.0f} | {lo[k]['repeats']} |")
    c = d["convert"]
    L.append(f"| first `load_multibench`: safe load + clean + write the Arrow cache ({d['cache_bytes'] / 1e9:.2f} GB) "
             f"| {c['seconds']:.2f} | {c['delta_mib']:.0f} | 1 |")
    for k in ("cache_load", "cache_load_touch"):
        L.append(f"| {names[k]} | {lo[k]['seconds']:.3f} | {lo[k]['delta_mib']:.0f} | {lo[k]['repeats']} |")
    sp = lo["safe_load"]["seconds"]
    r1 = sp / max(lo["cache_load"]["seconds"], 1e-9)
    r2 = lo["safe_load_touch"]["seconds"] / max(lo["cache_load_touch"]["seconds"], 1e-9)
    L += ["", f"Speed-up of the cache over `safe_load_pickle`: {r1:.0f}x (lazy load), {r2:.1f}x (load + "
          f"read every value once, on both sides). `safe_load_pickle` / plain `pickle.load` time: "
          f"{sp / max(lo['pickle_load']['seconds'], 1e-9):.2f}x. Target cache >= {CACHE_TARGET:.0f}x faster: "
          f"**{'met' if r1 >= CACHE_TARGET else 'missed'}** (lazy load; "
          f"{'met' if r2 >= CACHE_TARGET else 'not met'} even when every value is read).", ""]
    return L


BLOCKS = {"stagecache": "6. Stage cache: a grid's trial-seconds with and without reuse (issue 12.1)",
          "gpu": "7. GPU (issue 12.4): `python -m bench --gpu`",
          # written by hand from `python -m bench.slot_timeline` on a grid's store; never run by
          # `python -m bench`, so a rewrite always carries it over
          "timeline": "8. Slot timeline of a grid (issue 12.2)",
          "queue": "9. Two trials at a time: the grid's order against longest first (issue 12.2)",
          # written by hand from `python -m bench.moe_profile`; never run by `python -m bench`
          "moeprofile": "10. Where the MoE layer's CPU time goes (issue 12.3)"}


def _util(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def gpu_report(res: dict) -> list[str]:
    L = [f"Device: {res['device']}; wall {res['seconds']:.0f} s.", "",
         "Correctness: each dispatch against the loop reference (output and every gradient), padding mask, "
         "tolerance fp32 rtol 1e-4 / atol 1e-5, bf16 3e-2.", "",
         "| device | dtype | chi | p | dispatch | max abs out | max abs grad | ok |", "|---|---|---|---|---|---|---|---|"]
    L += [f"| {r['device']} | {r['dtype']} | {r['chi']} | {r['keep_ratio']} | {r['dispatch']} | {r['max_abs_out']:.2e} | "
          f"{r['max_abs_grad']:.2e} | {'yes' if r['ok'] else 'NO'} |" for r in res["correctness"]]
    L.append("")
    if "timing" in res:
        L += ["| chi | MoE / dense (eager) | compiled MoE / compiled dense | inference p=0.3 / p=1 |", "|---|---|---|---|"]
        L += [f"| {r['chi']} | {r['moe/dense']:.2f}x | {r.get('compiled moe/compiled dense', float('nan')):.2f}x | "
              f"{r['p0.3/p1']:.2f}x |" for r in res["timing"]]
        L += ["", f"Host syncs per MoE layer forward: {res['syncs']}", ""]
    else:
        L += [f"_{res['skipped']}._", ""]
    pack = res.get("packing")
    if pack:
        L += [f"Packing: 8 trials (S3 chi 8 and CLIP, seeds 0-3, the paper preset's model, 1 + 1 epochs, batch 256) "
              f"on a fake MOSEI-shaped file at {pack['scale']:g} of MOSEI's size, through run_grid.py:", "",
              "| --gpus-per-trial | trials at once | wall s | fixed s | trials per hour (measured) | GPU utilisation % |",
              "|---|---|---|---|---|---|"]
        L += [f"| {r['gpus_per_trial']:g} | {round(1 / r['gpus_per_trial'])} | " + (
              f"{r['wall_s']:.0f} | {r['fixed_s']:.0f} | {r['trials_per_hour']:.0f} | {_util(r['gpu_util'])} |"
              if "trials_per_hour" in r else f"– | – | not measured: {r['skipped']} | – |") for r in pack["rows"]]
        p = pack.get("paper")
        L += [""] if p is None else ["", f"The paper preset on one GPU, one benchmark, **extrapolated** (not measured) from the best packing "
                  f"(--gpus-per-trial {p['gpus_per_trial']:g}) by passes over the training split "
                  f"(paper {p['paper_passes']} passes with the stage cache, packing workload {p['pack_passes']}) "
                  f"at MOSEI's size: **{p['hours'] * 60:.0f} minutes** (goal: under 30).", ""]
    else:
        L += ["_Packing (trials per hour at --gpus-per-trial 1, 0.5, 0.25, 0.125): CUDA only, not run._", ""]
    return L


def write_blocks(res: dict, out: str, previous: str | None = None) -> None:
    """Replace (or append) the block of each BLOCKS section run in `res`, between its markers in `out`;
    the rest of the file is left as it is. A block not run this time is carried over from `previous`
    (the file before write_report rewrote it), so its figures are not lost."""
    renders = {"stagecache": stage_reuse_report, "gpu": gpu_report, "queue": queue_report}
    text = open(out).read() if os.path.exists(out) else "# s3core benchmarks\n"
    for sec, title in BLOCKS.items():
        begin, end = f"<!-- bench:{sec} -->", f"<!-- /bench:{sec} -->"
        if sec not in res:
            if previous and begin in previous and end in previous and begin not in text:
                old = previous[previous.index(begin):previous.index(end) + len(end)]
                text = text.rstrip("\n") + "\n\n" + old + "\n"
            continue
        body = "\n".join([begin, f"## {title}", "", f"- Command: `{res['command']}` (profile `{res['profile']}`), "
                          f"{res['date']}", "", *renders[sec](res[sec]), end])
        if begin in text and end in text:
            text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
        else:
            text = text.rstrip("\n") + "\n\n" + body + "\n"
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)


def _previous_sections(previous: str | None) -> dict:
    """section -> its lines in the previous report, with a line saying which run measured it
    (the previous header's command and date, unless the section was already carried over)."""
    if not previous:
        return {}
    lines = previous.splitlines()
    head = {k: ln.split(": ", 1)[1] for ln in lines[:8] for k in ("Command", "Date") if ln.startswith(f"- {k}: ")}
    out = {}
    for sec, title in TITLES.items():
        if f"## {title}" not in lines:
            continue
        i = lines.index(f"## {title}") + 1
        body = []
        while i < len(lines) and not lines[i].startswith(("## ", "<!-- bench:")):
            body.append(lines[i])
            i += 1
        text = [ln for ln in body if ln.strip()]
        if not text or text[0].startswith("_Not run in this invocation"):
            continue
        if not text[0].startswith("_Carried over"):
            body = ["", f"_Carried over from an earlier run ({head.get('Command', '?')}, {head.get('Date', '?')}): "
                        "not measured by the command above._", *body]
        out[sec] = body
    return out


def write_report(res: dict, out: str, previous: str | None = None) -> None:
    """Rewrite `out` with the sections run in `res`; a section not run is carried over from
    `previous` (the file before), marked as such, so measuring one section keeps the others."""
    carried = _previous_sections(previous)
    m = res["machine"]
    gpu = m.get("GPU", "none") != "none"
    L = ["# s3core benchmarks", "",
         f"- Command: `{res['command']}` (profile `{res['profile']}`)",
         f"- Date: {res['date']}",
         "- Machine: " + "; ".join(f"{k}: {v}" for k, v in m.items()),
         f"- Load average (1/5/15 min) at start: {res['load_start']}; at end: {res.get('load_end', 'n/a')} "
         "(the machine is shared: absolute times are noisy, so every figure is a ratio of runs "
         "interleaved in this one invocation)",
         f"- Wall time: {res.get('total_seconds', 0):.0f} s (" + ", ".join(
             f"{k} {v:.0f} s" for k, v in res.get("section_seconds", {}).items()) + ")", ""]
    for sec, title in TITLES.items():
        if sec not in res and sec in carried:
            L += [f"## {title}", *carried[sec]]
            continue
        L += [f"## {title}", ""]
        if sec == "orchestration":
            o = res.get("orchestration")
            if o is None or o.get("pending"):
                L += [f"_{(o or {}).get('pending', PENDING)}._", ""]
            else:
                L += ["Ratios are to the in-process sequential time of the same trials, in the same invocation.", "",
                      "| what | seconds | ratio |", "|---|---|---|"]
                L += [f"| {r['what']} | {r['seconds']:.2f} | {'' if r.get('ratio') is None else fmt_ratio(r['ratio'])} |"
                      for r in o.get("rows", [])]
                L += [f"- {n}" for n in o.get("notes", [])] + [""]
            continue
        if sec not in res:
            L += [f"_Not run in this invocation (sections run: {', '.join(res['sections_run'])})._", ""]
            continue
        L += {"moe": lambda: _moe(res["moe"], gpu), "pruning": lambda: _pruning(res["pruning"]),
              "data": lambda: _data(res["data"]), "probe": lambda: probe_report(res["probe"])}[sec]()
    L += ["## What changed in s3core/moe.py", "",
          "New dispatch `fused` (added to `DISPATCHES`; `auto` now picks it on the CPU, `grouped_mm` on CUDA): "
          "one `torch.autograd.Function` with a hand-written backward that runs expert by expert - gather the "
          "expert's tokens, `addmm` + GELU into preallocated (pairs, H) buffers, scale by the gate before the "
          "second matmul (H columns, not d_model), matmul, `index_add_` straight into the output; b2 enters as "
          "one (N, E) gate matrix @ b2. No (pairs, d_model) tensor is materialised or saved (the backward "
          "re-gathers per expert), so each expert's working set stays in cache, and there is no autograd graph "
          "of gathers/scatters. Section 1's `grouped_mm` column is the before figure, `fused` the after, from "
          "the same run.", ""]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(L))
    os.replace(tmp, out)

"""The spread of README's `corrsteer run` over SAE-training seeds (standing in for machines) x split seeds.

For every SAE-training seed: `corrsteer train-sae --seed S` into its own SAE folder (the seeds share one activation
collection through --keep-activations, and one corpus: --corpus-seed stays 0); for every (training seed, split
seed): `corrsteer run --seed K --sae-dir <that folder>` (resumable: a finished run is read, an interrupted one
resumes from its checkpoints). Then per cell, on the test items: balanced accuracy of CorrSteer-P, of each
random-feature draw at P's layers (control-random-feature-i) and their mean, of the best prompting row (prompting or
few-shot, the better on these test items), of mean-difference steering, of the shuffled-outcome control and of the
unsteered model; P minus the draws' mean and P minus the best prompt with paired-bootstrap 95% intervals (test items
resampled, the same resample for every row). The table gives median and range over the cells, the per-cell verdict
(P beats the draws' mean by >= 0.05 with its interval above 0, and beats the best prompt), the overlap of P's kept
layers between training seeds (Jaccard) and, at shared layers, the cosine between the decoder directions of P's
features; and per pair of banks how alike they are (held-out FVE, the share of latents whose decoder direction has a
match with cosine >= 0.9 in the other bank).

    CORRSTEER_CACHE=<dir> python3 -m bench.stability --task sentiment --train-seeds 0,1,2 --split-seeds 0,1
Writes bench/results/stability-<task>-<date>.{json,md}; extra `corrsteer run` options go after `--run-args`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import HERE, git_commit
from corrsteer.paths import cache_root
from corrsteer.report.stats import balanced_accuracy

P = "CorrSteer-P"
PROMPTS = ("prompting", "few-shot")
OTHERS = ("baseline", "mean-difference", "raw-residual", "control-shuffled-outcome", *PROMPTS)


def _seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _sh(cmd: list[str], log: Path) -> None:
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log, "a") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"{cmd[1]} exited with {rc}: see {log}")


def _parallel(jobs: int, calls: list[tuple]) -> list:
    """[f(*args) for f, *args in calls], `jobs` at a time (each call runs a corrsteer subprocess); results in order."""
    if jobs <= 1:
        return [f(*a) for f, *a in calls]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda c: c[0](*c[1:]), calls))


def bank_dir(work: Path, seed: int) -> Path:
    """The SAE folder of one training seed."""
    return work / "saes" / f"seed-{seed}"


def cell_dir(work: Path, task: str, train_seed: int, split_seed: int, tag: str = "") -> Path:
    """The output folder of one cell's `corrsteer run`."""
    return work / "runs" / task / f"t{train_seed}-s{split_seed}{tag}"


def train(work: Path, seed: int, extra: list[str]) -> Path:
    """The bank of one training seed (trained once; train-sae itself skips layers already there)."""
    sae_dir = bank_dir(work, seed)
    _sh(["corrsteer", "train-sae", "--seed", str(seed), "--sae-dir", str(sae_dir),
         "--keep-activations", str(work / "activations"), *extra], work / f"train-seed-{seed}.log")
    return sae_dir


def finished(out: Path) -> bool:
    """Whether a cell's run has finished (its report written, no run in progress)."""
    return (out / "report.md").exists() and not (out / "IN_PROGRESS").exists()


def run(work: Path, task: str, sae_dir: Path, train_seed: int, split_seed: int, extra: list[str],
        tag: str = "", start_from: Path | None = None) -> Path:
    """One cell's run (read when finished). start_from: a finished run whose checkpoints are copied first, so the
    stages whose inputs are unchanged (collection, validation) are read, not generated again."""
    out = cell_dir(work, task, train_seed, split_seed, tag)
    if finished(out):
        return out
    if start_from is not None and not (out / "checkpoints").exists():
        shutil.copytree(start_from / "checkpoints", out / "checkpoints")
    _sh(["corrsteer", "run", "--task", task, "--seed", str(split_seed), "--sae-dir", str(sae_dir),
         "--out", str(out), *extra], work / f"run-{task}-t{train_seed}-s{split_seed}.log")
    return out


# ---------------------------------------------------------------------------------------------------------------
# one cell: balanced accuracies and paired-bootstrap differences
# ---------------------------------------------------------------------------------------------------------------
def _rows(out: Path) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        r = json.loads(line)
        by.setdefault(r["variant"], []).append(r)
    return {v: sorted(rs, key=lambda r: r["id"]) for v, rs in by.items()}


def _draws(rows: dict) -> list[str]:
    named = sorted((v for v in rows if v.startswith("control-random-feature-")), key=lambda v: int(v.rsplit("-", 1)[1]))
    return named or [v for v in rows if v == "control-random-feature"]


def _diff(rows, idx, a: list[str], b: list[str], classes: bool = True) -> float:
    """mean balanced accuracy (accuracy for free-form tasks) of rows a minus that of rows b on the items idx."""
    def mean(names):
        return statistics.fmean(balanced_accuracy([rows[n][i] for i in idx], classes) for n in names)
    return mean(a) - mean(b)


def _boot(rows, a, b, reps: int, seed: int, classes: bool = True) -> list[float]:
    """Point estimate and 95% percentile interval of _diff over item resamples."""
    n = len(rows[a[0]])
    rng = random.Random(seed)
    samples = sorted(_diff(rows, [rng.randrange(n) for _ in range(n)], a, b, classes) for _ in range(reps))
    return [_diff(rows, range(n), a, b, classes), samples[int(0.025 * reps)], samples[int(0.975 * reps) - 1]]


def _classes(out: Path) -> bool:
    """Whether the run's task has classes (balanced accuracy) or is free-form (accuracy), as its report reads it."""
    f = out / "report_inputs.json"
    return bool(json.loads(f.read_text()).get("classes", True)) if f.exists() else True


def cell(out: Path, reps: int, seed: int) -> dict:
    rows = _rows(out)
    classes = _classes(out)
    bacc = {v: balanced_accuracy(rs, classes) for v, rs in rows.items()}
    draws = _draws(rows)
    prompt = max((v for v in PROMPTS if v in rows), key=lambda v: bacc[v], default=None)
    plan = json.loads((out / "plans" / "P.json").read_text())
    c = dict(out=out.name, baseline=bacc.get("baseline"), P=bacc.get(P), random_mean=None, random_draws=[],
             best_prompt=bacc.get(prompt), best_prompt_row=prompt, mean_difference=bacc.get("mean-difference"),
             shuffled=bacc.get("control-shuffled-outcome"),
             P_layers=[e["layer"] for e in plan["entries"]],
             P_features=[[e["layer"], f] for e in plan["entries"] for f in e["features"]])
    if draws:
        c.update(random_draws=[bacc[v] for v in draws], random_mean=statistics.fmean(bacc[v] for v in draws),
                 P_minus_random=_boot(rows, [P], draws, reps, seed, classes))
        c["share_P_beats"] = sum(bacc[P] > bacc[v] for v in draws) / len(draws)
    if prompt:
        c["P_minus_prompt"] = _boot(rows, [P], [prompt], reps, seed + 1, classes)
    c.update(measure="balanced accuracy" if classes else "accuracy", P_minus={
        v: _boot(rows, [P], [v], reps, seed + 2 + i, classes) for i, v in enumerate(OTHERS) if v in rows})
    c["verdict"] = bool(draws and c["P_minus_random"][0] >= 0.05 and c["P_minus_random"][1] > 0
                        and (prompt is None or c["P_minus_prompt"][1] > 0))
    return c


def rules_differ(out: Path) -> bool:
    """Whether P's two filters keep different layers in a run's validation.json (the random filter's draws are there
    only when the run used it; a run without them is taken to differ)."""
    v = json.loads((out / "validation.json").read_text())
    beat = {L for L, sc in v["per_layer"].items() if sc > v["baseline"]}
    rnd = v.get("random_per_layer") or {}
    return not rnd or beat != {L for L in beat if L in rnd and v["per_layer"][L] > rnd[L]}


# ---------------------------------------------------------------------------------------------------------------
# how alike the banks and P's choices are
# ---------------------------------------------------------------------------------------------------------------
def _w_dec(sae_dir: Path, layer: int):
    import torch
    from safetensors.torch import load_file
    w = load_file(str(sae_dir / f"blocks.{layer}.hook_resid_post" / "sae_weights.safetensors"))["W_dec"]
    return torch.nn.functional.normalize(w.double(), dim=1)


def bank_layers(sae_dir: Path) -> dict[int, float]:
    """{layer: held-out FVE on the task prompts} as each SAE's cfg.json recorded it when it was trained."""
    from corrsteer.sae.train import bank_quality
    return {r["layer"]: r["fve"] for r in bank_quality(sae_dir)}


def bank_pair(a: Path, b: Path, layers: list[int]) -> dict:
    """Held-out FVE of each bank (median over `layers`) and the share of a's latents whose decoder direction has a
    cosine >= 0.9 match among b's, per layer (median, min)."""
    fve = [statistics.median(q[L] for L in layers) for q in (bank_layers(a), bank_layers(b))]
    matched = [float(((_w_dec(a, L) @ _w_dec(b, L).T).max(dim=1).values >= 0.9).double().mean()) for L in layers]
    return dict(fve_median=fve, matched_share_median=statistics.median(matched), matched_share_min=min(matched))


@functools.cache
def _digest(sae_dir: Path) -> str:
    """The bank's weight digest (corrsteer.sae.bank.training_record), computed once per folder."""
    from corrsteer.sae.bank import training_record
    return training_record(sorted(sae_dir.glob("blocks.*.hook_resid_post")))["digest"]


def cached_pair(work: Path, a: Path, b: Path, layers: list[int]) -> dict:
    """bank_pair, kept in work/bank-pairs.json by the banks' digests and layers (the same banks for every task)."""
    f = work / "bank-pairs.json"
    got = json.loads(f.read_text()) if f.exists() else {}
    key = f"{_digest(a)} {_digest(b)} {layers}"
    if key not in got:
        got[key] = bank_pair(a, b, layers)
        f.write_text(json.dumps(got, indent=1) + "\n")
    return got[key]


def p_overlap(cells: dict, banks: dict) -> list[dict]:
    """Per split seed and pair of training seeds: Jaccard of P's kept layers, and at shared layers the best cosine
    between the decoder directions of the two P's features there."""
    out = []
    for (t1, s1), c1 in cells.items():
        for (t2, s2), c2 in cells.items():
            if s1 != s2 or t1 >= t2:
                continue
            l1, l2 = set(c1["P_layers"]), set(c2["P_layers"])
            cos = []
            for L in sorted(l1 & l2):
                f1 = [f for k, f in c1["P_features"] if k == L]
                f2 = [f for k, f in c2["P_features"] if k == L]
                cos.append(float((_w_dec(banks[t1], L)[f1] @ _w_dec(banks[t2], L)[f2].T).max()))
            out.append(dict(split_seed=s1, train_seeds=[t1, t2], jaccard=len(l1 & l2) / max(1, len(l1 | l2)),
                            shared_layers=sorted(l1 & l2), feature_cosine=cos))
    return out


def _med_range(xs) -> str:
    xs = [x for x in xs if x is not None]
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}, {max(xs):.3f}]" if xs else "-"


def markdown(doc: dict) -> str:
    cells = doc["cells"]
    rows = [("unsteered", "baseline"), ("CorrSteer-P", "P"), ("random features at P's layers (mean of draws)",
            "random_mean"), ("best prompting row", "best_prompt"), ("mean-difference steering", "mean_difference"),
            ("shuffled-outcome control", "shuffled")]
    measure = cells[0].get("measure", "balanced accuracy") if cells else "balanced accuracy"
    lines = [f"# Stability of `corrsteer run --task {doc['task']}` ({doc['date']})", "",
             f"Command: `{doc['command']}`; runs: `corrsteer run --task {doc['task']} --seed K --sae-dir <bank> "
             f"{' '.join(doc['run_args'])}`; banks: `corrsteer train-sae --seed S {' '.join(doc['train_args'])}`. "
             f"{doc['device']}, commit {doc['commit']}.", "",
             f"{measure.capitalize()} on the test items over {len(cells)} cells ({', '.join(c['out'] for c in cells)}"
             f" of training seeds {doc['train_seeds']} x split seeds {doc['split_seeds']}"
             f"{'; only the cells finished' if doc.get('finished_only') else ''}): median [min, max].", "",
             f"| row | {measure} |", "|---|---:|"]
    lines += [f"| {name} | {_med_range(c[k] for c in cells)} |" for name, k in rows]
    lines += ["", "| cell | P | draws (mean; each) | share P beats | P − draws [95%] | best prompt | P − prompt [95%] "
              "| mean-diff | P's layers | verdict |", "|---|---:|---|---:|---|---:|---|---:|---|---|"]
    for c in cells:
        pr = c.get("P_minus_random", [float("nan")] * 3)
        pp = c.get("P_minus_prompt", [float("nan")] * 3)
        lines.append(f"| {c['out']} | {c['P']:.3f} | {c['random_mean'] or float('nan'):.3f} ("
                     f"{', '.join(f'{x:.2f}' for x in c['random_draws'])}) | {c.get('share_P_beats', 0):.2f} | "
                     f"{pr[0]:+.3f} [{pr[1]:+.3f}, {pr[2]:+.3f}] | {c['best_prompt'] or float('nan'):.3f} "
                     f"({c['best_prompt_row']}) | {pp[0]:+.3f} [{pp[1]:+.3f}, {pp[2]:+.3f}] | "
                     f"{c['mean_difference'] or float('nan'):.3f} | {c['P_layers']} | "
                     f"{'gain' if c['verdict'] else 'no gain'} |")
    names = [v for v in OTHERS if any(v in c.get("P_minus", {}) for c in cells)]
    if names:
        lines += ["", f"P minus each other row ({measure}, paired bootstrap over the test items, 95%):", "",
                  "| cell | " + " | ".join(f"P − {v}" for v in ("random draws (mean)", *names)) + " |",
                  "|---|" + "---|" * (len(names) + 1)]
        for c in cells:
            got = [c.get("P_minus_random"), *(c.get("P_minus", {}).get(v) for v in names)]
            lines.append(f"| {c['out']} | " + " | ".join(
                f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "-" for d in got) + " |")
    lines += ["", "Verdict per cell: P beats the mean of the random-feature draws at its layers by ≥ 0.05 with the "
              "interval above 0, and beats the best prompting row with the interval above 0.",
              f"Cells with that gain: {sum(c['verdict'] for c in cells)} of {len(cells)}.", "",
              "P's kept layers across training seeds (same split seed):", ""]
    lines += [f"- split {o['split_seed']}, seeds {o['train_seeds']}: Jaccard {o['jaccard']:.2f}, shared "
              f"{o['shared_layers']}, decoder cosine of P's features there "
              f"{[round(x, 2) for x in o['feature_cosine']]}" for o in doc["p_overlap"]]
    alt = doc.get("compare_p_filter")
    if alt:
        lines += ["", f"P's filter compared: each cell again with `--p-filter {alt}` (P and its controls only; "
                  "collection and validation reused). P minus the mean of the random-feature draws [95%]:", "",
                  f"| cell | run's rule: P | P − draws | --p-filter {alt}: P | P − draws | P's layers |",
                  "|---|---:|---|---:|---|---|"]
        for c in cells:
            a = c.get("p_filter_" + alt)
            if a:
                m, o = c["P_minus_random"], a["P_minus_random"]
                lines.append(f"| {c['out']} | {c['P']:.3f} | {m[0]:+.3f} [{m[1]:+.3f}, {m[2]:+.3f}] | {a['P']:.3f} | "
                             f"{o[0]:+.3f} [{o[1]:+.3f}, {o[2]:+.3f}] | {c['P_layers']} vs {a['P_layers']}"
                             f"{' (the same layers kept: the same P)' if a.get('same_kept_layers') else ''} |")
    lines += ["", "Banks compared (median held-out FVE on task prompts; share of latents with a cos ≥ 0.9 match):",
              ""]
    lines += [f"- seeds {b['train_seeds']}: FVE {b['fve_median'][0]:.3f} vs {b['fve_median'][1]:.3f}; matched "
              f"median {b['matched_share_median']:.2f}, min {b['matched_share_min']:.2f}" for b in doc["banks"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--train-seeds", default="0,1,2", help="SAE-training seeds (comma-separated)")
    ap.add_argument("--split-seeds", default="0,1", help="`corrsteer run --seed` values (comma-separated)")
    ap.add_argument("--work", default=None, help="banks, runs and logs (default: $CORRSTEER_CACHE/stability)")
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--tag", default="", help="appended to the output name")
    ap.add_argument("--train-args", default="", help="extra `corrsteer train-sae` options, one string")
    ap.add_argument("--compare-p-filter", default=None, choices=("baseline", "random"),
                    help="also run every cell with this --p-filter (P and its controls only, the first run's "
                    "collection and validation reused) and compare P minus the draws under both rules")
    ap.add_argument("--jobs", type=int, default=1, help="cells (and banks after the first) run this many at a "
                    "time, each with OMP_NUM_THREADS=1 unless it is set")
    ap.add_argument("--finished-only", action="store_true", help="tabulate the cells already finished under --work "
                    "(banks must be there); run nothing")
    ap.add_argument("--run-args", nargs=argparse.REMAINDER, default=[], help="extra `corrsteer run` options")
    args = ap.parse_args()
    work = Path(args.work) if args.work else cache_root() / "stability"
    work.mkdir(parents=True, exist_ok=True)
    train_args = shlex.split(args.train_args)
    if args.jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")       # side by side, one thread each (or they stall)
    seeds = _seeds(args.train_seeds)
    if args.finished_only:
        banks = {t: bank_dir(work, t) for t in seeds}
    else:
        first = {seeds[0]: train(work, seeds[0], train_args)}   # collects the activations the other seeds read
        banks = first | dict(zip(seeds[1:], _parallel(args.jobs, [(train, work, t, train_args) for t in seeds[1:]])))
    keys = [(t, s) for t in banks for s in _seeds(args.split_seeds)]
    if args.finished_only:                                   # the table of what is there; nothing is run
        keys = [k for k in keys if finished(cell_dir(work, args.task, *k))]
        outs = [cell_dir(work, args.task, *k) for k in keys]
    else:
        outs = _parallel(args.jobs, [(run, work, args.task, banks[t], t, s, args.run_args) for t, s in keys])
    cells = {(t, s): cell(out, args.reps, 1000 * t + s) for (t, s), out in zip(keys, outs)}
    if args.compare_p_filter:
        extra = [*args.run_args, "--p-filter", args.compare_p_filter, "--variant", "P", "--few-shot", "0"]
        for (t, s), c in cells.items():
            main_dir = cell_dir(work, args.task, t, s)
            if not rules_differ(main_dir):            # both rules keep the same layers: the same P
                c["p_filter_" + args.compare_p_filter] = dict(c, same_kept_layers=True)
                continue
            alt = run(work, args.task, banks[t], t, s, extra, f"-{args.compare_p_filter}", main_dir)
            c["p_filter_" + args.compare_p_filter] = cell(alt, args.reps, 1000 * t + s)
    layers = sorted(set.intersection(*(set(bank_layers(d)) for d in banks.values())))
    pairs = [dict(train_seeds=[a, b], **cached_pair(work, banks[a], banks[b], layers)) for a in banks for b in banks
             if a < b]
    from bench.common import device_name
    doc = dict(task=args.task, date=dt.date.today().isoformat(), commit=git_commit(), device=device_name("cpu"),
               command="python3 -m bench.stability " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               train_seeds=list(banks), split_seeds=_seeds(args.split_seeds), train_args=train_args,
               run_args=args.run_args, jobs=args.jobs, finished_only=args.finished_only,
               load_average=list(os.getloadavg()), cells=list(cells.values()),
               p_overlap=p_overlap(cells, banks), banks=pairs, compare_p_filter=args.compare_p_filter)
    name = f"stability-{args.task}-{doc['date']}{'-' + args.tag if args.tag else ''}"
    os.makedirs(args.out_dir, exist_ok=True)
    Path(args.out_dir, name + ".json").write_text(json.dumps(doc, indent=1) + "\n")
    Path(args.out_dir, name + ".md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()

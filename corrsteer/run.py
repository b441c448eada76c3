"""`corrsteer run`: collect on the select split -> choose features (S, A, P via the validation split) -> test all
variants and the no-SAE baselines in one batched pass -> report. Outputs in out_dir:
config.json (the settings, replayable with `corrsteer run --config`), plan.json (the last variant asked for, CorrSteer-P
by default; plans/<variant>.json each), stats.safetensors (per-layer CorrStats), predictions.jsonl (one row per test
sample and variant, baseline included), report.md and PNG plots.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .collect import collect, score_rows
from .config import EvalConfig, RunConfig, bank_context, model_context, write_config
from .generate import generate_batch
from .rankings import layer_candidates
from .run_extras import extra_settings, prepare, report_sections
from .select import mean_difference, p_prefixes, raw_direction, variant_a, variant_p, variant_s
from .steer import SteeringPlan


def run_plans(lm, task, items, plans: dict, batch_size: int, desc: str, steer_prompt: bool = False) -> dict:
    """Generate every item under every plan ({name: {HookPoint: vector}}) in shared batches: {name: rows}."""
    names = list(plans)
    rows = {n: [] for n in names}
    per_batch = max(1, batch_size * 4 // len(names))      # keep batch rows (prompts x plans) bounded
    for i in tqdm(range(0, len(items), per_batch), desc=desc, unit="batch"):
        batch = items[i:i + per_batch]
        out = generate_batch(lm, [it.prompt for it in batch], task.max_new_tokens,
                             plans=[plans[n] for n in names], steer_prompt=steer_prompt,
                             **getattr(task, "gen_kwargs", {}))
        C = len(names)
        for c, n in enumerate(names):
            rows[n].extend(score_rows(task, batch, out.texts[c::C]))
    return rows


def _acc(rows) -> float:
    return sum(r["correct"] for r in rows) / max(1, len(rows))


def corrsteer_run(lm, bank, task, out_dir, cfg: RunConfig, sae_source: str = "trained") -> dict:
    from .evaluate import compare
    from .report import write_report

    out = Path(out_dir)
    (out / "plans").mkdir(parents=True, exist_ok=True)
    bank, task = prepare(lm, bank, task, cfg)
    write_config(out, cfg, model=model_context(lm), saes=bank_context(bank, sae_source), task=task.name)
    sel, val, test = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)

    # 1. collect and correlate
    col = collect(lm, bank, task, sel, cfg.batch_size, cfg.pool, checkpoint=out / "collect.ckpt.safetensors",
                  ranking=cfg.ranking)
    save_file({f"layer{L}.{k}": v.cpu() for L, st in col.sae.items() for k, v in st.state_dict().items()},
              str(out / "stats.safetensors"))
    cands = layer_candidates(col.sae, cfg.ranking, k=5, coef=cfg.coef, scale=cfg.scale)
    if not cands:
        raise RuntimeError("no SAE feature correlates positively with correctness: all answers right or all wrong "
                           f"on the select split (accuracy {_acc(col.rows):.2f})")

    # 2. validate every layer's feature alone (plus the baseline) in one batched pass (only P needs it)
    hooks = {L: bank[L].hook for L in cands}
    val_acc, base_val = {}, float("nan")
    if "P" in cfg.variants:
        single = {L: SteeringPlan.from_features(f"L{L}", lm.name, sae_source, bank, [dict(layer=L, **cands[L][0])])
                  for L in cands}
        val_plans = {"baseline": {}} | {f"L{L}": single[L].hook_vectors(lm.device) for L in cands}
        val_rows = run_plans(lm, task, val, val_plans, cfg.batch_size, "validate", cfg.all_positions)
        val_acc = {L: _acc(val_rows[f"L{L}"]) for L in cands}
        base_val = _acc(val_rows["baseline"])

    # 3. the variants and the no-SAE baselines
    pickers = {"S": lambda: variant_s(cands), "A": lambda: variant_a(cands),
               "P": lambda: variant_p(cands, val_acc, base_val)}
    picks = {n: pickers[n]() for n in cfg.variants}
    if cfg.p_combine == "prefix" and len(picks.get("P", [])) > 1:   # validate the kept ones as growing prefixes
        prefixes = p_prefixes(picks["P"])
        pref_plans = {f"P{i + 1}": SteeringPlan.from_features("p", lm.name, sae_source, bank, pre)
                      .hook_vectors(lm.device) for i, pre in enumerate(prefixes[1:], start=1)}
        pref_rows = run_plans(lm, task, val, pref_plans, cfg.batch_size, "validate P", cfg.all_positions)
        pref_acc = [prefixes[0][0]["val_acc"]] + [_acc(pref_rows[f"P{i + 1}"]) for i in range(1, len(prefixes))]
        best_i = max(range(len(prefixes)), key=lambda i: (pref_acc[i], -i))
        picks["P"] = prefixes[best_i]
        val_prefix_acc = pref_acc
    else:
        val_prefix_acc = []
    plans = {n: SteeringPlan.from_features(f"CorrSteer-{n}", lm.name, sae_source, bank, p, cfg.all_positions)
             for n, p in picks.items()}
    for n, p in plans.items():
        p.save(out / "plans" / f"{n}.json")
    plans[cfg.variants[-1]].save(out / "plan.json")
    if cfg.select_only:
        return dict(plans=plans, candidates=cands)
    best = variant_s(cands)[0]
    best_L = best["layer"]
    raw_dim, raw_vec = raw_direction(col.raw, best_L, cfg.scale)
    test_plans = {"baseline": {}, **{f"CorrSteer-{n}": p.hook_vectors(lm.device) for n, p in plans.items()},
                  "raw-residual": {hooks[best_L]: raw_vec.to(lm.device)},
                  "mean-difference": {hooks[best_L]: mean_difference(col.raw, best_L, cfg.scale)}}

    # 4. test
    test_rows = run_plans(lm, task, test, test_plans, cfg.batch_size, "test", cfg.all_positions)
    with open(out / "predictions.jsonl", "w") as f:
        for name, rows in test_rows.items():
            for r in rows:
                f.write(json.dumps(dict(variant=name, **r)) + "\n")
    comps = [compare(n, test_rows["baseline"], test_rows[n]) for n in test_plans if n.startswith("CorrSteer")]
    base_comps = [compare(n, test_rows["baseline"], test_rows[n]) for n in ("raw-residual", "mean-difference")]
    settings = dict(model=lm.name, task=task.name, scorer=getattr(task, "scorer", task.kind),
                    sae_source=sae_source, layers=len(bank),
                    n_select=len(sel), n_val=len(val), n_test=len(test), pool=cfg.pool, coef=cfg.coef,
                    scale=cfg.scale, select_accuracy=f"{_acc(col.rows):.3f}", val_baseline=f"{base_val:.3f}",
                    P_layers=[p["layer"] for p in picks.get("P", [])], S=f"layer {best_L} feature {best['feature']}",
                    raw_residual=f"layer {best_L} dim {raw_dim}", mean_difference_layer=best_L,
                    **extra_settings(task, cfg))
    write_report(out, title=f"CorrSteer on {task.name} ({lm.name})", comparisons=comps, top_features=cands,
                 layer_r={L: c[0]["r"] for L, c in cands.items()}, settings=settings, baselines=base_comps,
                 outputs=test_rows, extra=report_sections(sae_source, picks))
    (out / "validation.json").write_text(json.dumps(dict(baseline=base_val, per_layer=val_acc,
                                                         p_prefix_accuracy=val_prefix_acc), indent=1))
    return dict(comparisons=comps, baselines=base_comps, settings=settings)


def eval_plan(lm, task, plan, out_dir, cfg: EvalConfig) -> dict:
    """`corrsteer eval`: a saved plan against the unsteered model on the test split (disjoint from select/val)."""
    from .evaluate import compare

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg, model=model_context(lm), plan=dict(name=plan.name, sae_source=plan.sae_source),
                 task=task.name)
    _, task = prepare(lm, None, task, cfg)
    _, _, test = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    rows = run_plans(lm, task, test, {"baseline": {}, plan.name: plan.hook_vectors(lm.device)}, cfg.batch_size, "eval",
                     plan.all_positions)
    with open(out / "predictions.jsonl", "w") as f:
        for name, rs in rows.items():
            for r in rs:
                f.write(json.dumps(dict(variant=name, **r)) + "\n")
    return dict(comparison=compare(plan.name, rows["baseline"], rows[plan.name]))

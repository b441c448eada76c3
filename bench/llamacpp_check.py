"""Opt-in check (not run by CI): the exported control vector steers llama.cpp the way the plan steers our model.

    pip install llama-cpp-python          # builds llama.cpp from source: about 10 minutes on 2 cores
    python -m bench.llamacpp_check runs/sentiment/plan.json --task sentiment --n 48 [--allow-prompt-positions]

It exports PLAN as a llama.cpp control vector (corrsteer.export.formats.export_plan), loads the default model's
GGUF (corrsteer.model.lm.smollm2_gguf()) with llama_cpp.Llama, and answers the same test items of a built-in split
greedily, from the same token ids, without and with the control vector (llama_set_adapter_cvec on Llama.ctx;
direction.N for block N = blocks.N.hook_resid_post, layers 1..n_layer-1). Beside it, our runtime (generate_batch):
baseline, the plan as made (last prompt token + generated tokens unless --all-positions) and the plan at every
position, which is what llama.cpp does, so that row is the like-for-like one; llama.cpp runs the Q4_1 weights
(ours: dequantised to float32), so answers need not match token for token. Writes
bench/results/llamacpp-check.json: per run accuracy, recall per class and the labels answered, beside the best
constant answer on the same items, and the share of identical answer texts between the runtimes.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from corrsteer.export.formats import export_plan
from corrsteer.export.gguf import read_directions
from corrsteer.model.generate import generate_batch
from corrsteer.model.lm import load_model, smollm2_gguf
from corrsteer.model.steer import load_plan
from corrsteer.tasks.task import get_task


def llamacpp_answers(llm, lm, prompts, max_new_tokens, cvec: dict[int, np.ndarray] | None, n_layer: int):
    """Greedy answers from llama.cpp with the control vector set (or cleared) on the context."""
    import llama_cpp
    n_embd = llm.n_embd()
    if cvec:
        data = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)   # layer 1 at offset 0 (common.cpp)
        for n, v in cvec.items():
            data[n_embd * (n - 1): n_embd * n] = v
        ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = _apply(llama_cpp, llm, ptr, data.size, n_embd, 1, n_layer - 1)
    else:
        rc = _apply(llama_cpp, llm, None, 0, n_embd, -1, -1)
    if rc != 0:
        raise RuntimeError(f"llama.cpp refused the control vector (status {rc})")
    out = []
    for p in prompts:   # the same token ids our runtime feeds (chat template, no extra BOS)
        ids = lm.tokenizer(lm.format(p), add_special_tokens=not lm.has_chat_template).input_ids
        llm.reset()
        r = llm.create_completion(ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
        out.append(r["choices"][0]["text"])
    return out


def _apply(llama_cpp, llm, ptr, n, n_embd, start, end):
    """llama_set_adapter_cvec(ctx, ...) in llama-cpp-python 0.3.36; older names in older bindings."""
    fn = next(getattr(llama_cpp, f) for f in ("llama_set_adapter_cvec", "llama_apply_adapter_cvec",
                                              "llama_control_vector_apply") if hasattr(llama_cpp, f))
    ctx = llm.ctx
    return fn(ctx, ptr, n, n_embd, start, end)


def load_llama(llama_cpp, path):
    """llama_cpp.Llama on the GGUF with llama.cpp's extra buffer types off (use_extra_bufts = False: its runtime
    repacking of the Q4_1 weights for AMX/AVX-512 crashed here with SIGSEGV / SIGILL inside llama_decode on the
    first prompt, in llama-cpp-python 0.3.36 built from source on this Xeon); Llama() has no argument for it."""
    import llama_cpp.llama as llama_module
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p
    llama_module.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=2, seed=0, verbose=False)
    finally:
        llama_module.llama_cpp.llama_model_default_params = default


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan")
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--n", type=int, default=24, help="test items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-prompt-positions", action="store_true")
    ap.add_argument("--out", default="bench/results/llamacpp-check.json")
    a = ap.parse_args(argv)
    import llama_cpp  # optional: the whole script needs it

    plan = load_plan(a.plan)
    cv_path = Path(a.out).with_suffix(".gguf")
    export_plan(plan, "gguf-control-vector", cv_path, allow_prompt_positions=a.allow_prompt_positions)
    _, cvec = read_directions(cv_path)
    task = get_task(a.task, seed=a.seed)
    items = task.split(192, 48, a.n, seed=a.seed)[2]
    prompts = [it.prompt for it in items]
    lm = load_model(plan.model)
    llm = load_llama(llama_cpp, smollm2_gguf())
    res = {"plan": a.plan, "task": a.task, "n": len(items), "date": time.strftime("%Y-%m-%d"),
           "device": f"CPU ({os.cpu_count()} cores)", "command": " ".join(sys.argv),
           "versions": {"llama-cpp-python": llama_cpp.__version__, "torch": torch.__version__}}
    ours = generate_batch(lm, prompts, task.max_new_tokens, plans=[{}, plan.hook_vectors()],
                          steer_prompt=plan.all_positions).texts
    every = generate_batch(lm, prompts, task.max_new_tokens, plans=[plan.hook_vectors()], steer_prompt=True).texts
    runs = {"corrsteer baseline": ours[0::2], "corrsteer steered": ours[1::2],
            "corrsteer steered, every position": every,
            "llama.cpp baseline": llamacpp_answers(llm, lm, prompts, task.max_new_tokens, None, lm.n_layers),
            "llama.cpp steered": llamacpp_answers(llm, lm, prompts, task.max_new_tokens, cvec, lm.n_layers)}
    golds = [it.gold for it in items]
    res["best constant answer"] = constant = max(golds.count(g) for g in set(golds)) / len(golds)
    print(f"{'best constant answer':34s} {100 * constant:5.1f}%")
    for name, texts in runs.items():
        scored = [task.score(it, t) for it, t in zip(items, texts)]
        correct = [y for _, y in scored]
        recall = {g: float(np.mean([y for (_, y), h in zip(scored, golds) if h == g])) for g in sorted(set(golds))}
        answered = {p: [q for q, _ in scored].count(p) for p in sorted({q for q, _ in scored})}
        res[name] = {"accuracy": float(np.mean(correct)), "recall per class": recall, "answered": answered,
                     "correct": correct, "answers": texts}
        print(f"{name:34s} {100 * np.mean(correct):5.1f}%  (n={len(items)})  recall "
              + ", ".join(f"{g} {100 * r:.0f}%" for g, r in recall.items()) + f"  answered {answered}")
    for a_, b_ in (("corrsteer baseline", "llama.cpp baseline"),
                   ("corrsteer steered, every position", "llama.cpp steered")):
        same = float(np.mean([x.strip() == y.strip() for x, y in zip(runs[a_], runs[b_])]))
        res[f"same answer: {a_} / {b_}"] = same
        print(f"same answer text, {a_} vs {b_}: {100 * same:.0f}%")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

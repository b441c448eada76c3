"""Opt-in check (not run by CI): the exported control vector steers llama.cpp the way the plan steers our model.

    pip install llama-cpp-python          # builds llama.cpp from source: minutes on 2 cores
    python bench/llamacpp_check.py runs/sentiment/plan.json --task sentiment --n 24 [--allow-prompt-positions]

It exports PLAN as a llama.cpp control vector (corrsteer.export.formats.export_plan), loads the default model's
GGUF (corrsteer.model.lm.smollm2_gguf()) with llama_cpp.Llama, answers the same test items of a built-in split
greedily without and with the control vector (llama.cpp's control vector API: Llama's context and
llama_cpp.llama_apply_adapter_cvec / llama_control_vector_apply, direction.N for block N = blocks.N.hook_resid_post,
layers 1..n_layer-1), and prints accuracy for both runtimes on the same items next to `corrsteer eval`'s numbers
(our model, baseline and steered, generate_batch with the plan's vectors). The two runtimes differ on purpose
in two places: llama.cpp runs the Q4_1 GGUF weights (ours: dequantised to float32) and steers every prompt position
(ours: only the last prompt token unless the plan was made with --all-positions), so the numbers should move the same
way, not match. Writes bench/results/llamacpp-check.json. Not run yet (llama-cpp-python was not built on the
2-core shared machine this was written on), so the llama_cpp calls here are untested.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

import numpy as np

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
    for p in prompts:
        text = lm.format(p)
        llm.reset()
        r = llm.create_completion(text, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
        out.append(r["choices"][0]["text"])
    return out


def _apply(llama_cpp, llm, ptr, n, n_embd, start, end):
    """llama_apply_adapter_cvec(ctx, ...) in recent llama.cpp; llama_control_vector_apply in older bindings."""
    fn = getattr(llama_cpp, "llama_apply_adapter_cvec", None) or llama_cpp.llama_control_vector_apply
    ctx = getattr(llm, "ctx", None) or llm._ctx.ctx
    return fn(ctx, ptr, n, n_embd, start, end)


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
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), n_ctx=1024, n_threads=2, seed=0, verbose=False)
    res = {"plan": a.plan, "task": a.task, "n": len(items), "date": time.strftime("%Y-%m-%d")}
    ours = generate_batch(lm, prompts, task.max_new_tokens, plans=[{}, plan.hook_vectors()],
                          steer_prompt=plan.all_positions).texts
    runs = {"corrsteer baseline": ours[0::2], "corrsteer steered": ours[1::2],
            "llama.cpp baseline": llamacpp_answers(llm, lm, prompts, task.max_new_tokens, None, lm.n_layers),
            "llama.cpp steered": llamacpp_answers(llm, lm, prompts, task.max_new_tokens, cvec, lm.n_layers)}
    for name, texts in runs.items():
        correct = [task.score(it, t)[1] for it, t in zip(items, texts)]
        res[name] = {"accuracy": float(np.mean(correct)), "correct": correct, "answers": texts}
        print(f"{name:20s} {100 * np.mean(correct):5.1f}%  (n={len(items)})")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

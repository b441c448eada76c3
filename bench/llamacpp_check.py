"""Check (opt-in, needs llama.cpp built from source): the exported control vector, loaded by llama.cpp's own
control-vector loader, steers llama.cpp the way the plan steers our model, per token; the same vectors one layer off
must not.

    # once: llama.cpp (here the tree vendored in llama-cpp-python 0.3.16's sdist, llama.cpp commit
    # 4227c9be4268ac844921b90f31595f81236bd317) and bench/llamacpp/dump_logits.cpp linked against its libraries
    cmake -S bench/llamacpp -B BUILD -DLLAMA_CPP_DIR=PATH/TO/llama.cpp -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release
    cmake --build BUILD -j1 --target dump_logits
    python -m bench.llamacpp_check --build-dir BUILD [--plan PLAN.json] [--n 32]

The model: our runtime loads the default model's GGUF (SmolLM2-135M-Instruct, Q4_1) de-quantised to float32; this
script writes the same tensors, de-quantised by gguf-py as transformers does, with the same metadata and tokenizer,
to an F32 GGUF, so that both runtimes compute the same function. The plan (--plan, or a random plan adding a vector
of norm --norm at the output of each of --layers, every position) is exported with `corrsteer export --format
gguf-control-vector` (export_plan). dump_logits parses `-m F32.gguf --control-vector FILE` with llama.cpp's
common_params_parse and loads both with common_init_from_params, which reads the file with
common_control_vector_load (common/common.cpp, what every llama.cpp tool does with --control-vector) and applies it
(llama_apply_adapter_cvec; `build_cvec` adds direction.N to the output of block N at every position). For N
chat-formatted prompts of a built-in task, the same token ids in both runtimes, it compares the per-token logit
changes (steered minus unsteered, full vocabulary) of llama.cpp with ours (SteeringPlan.apply at every position):
Pearson correlation, max abs difference and the share of positions whose top token agrees; the unsteered logits of
the two runtimes are compared too. The control exports the plan with every vector moved one layer down
(direction.N -> direction.N-1; up where the plan steers layer 1).

Verdict (bench/steer_compare.py): a comparison matches when Pearson >= 0.99 and the max abs difference is at most
0.1 x the largest logit change of ours; the check passes when the plan matches and the control does not.
Writes bench/results/llamacpp-check-<device>-<date>.json.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import steer_compare as C
from bench.common import base_parser, finish_args, write_json
from corrsteer.export.formats import export_plan
from corrsteer.model.lm import load_model, smollm2_gguf
from corrsteer.model.steer import load_plan


def write_f32_gguf(src, out) -> Path:
    """`src` with every tensor de-quantised to float32 (gguf-py's dequantize, as transformers loads it), the same
    metadata and tokenizer, general.file_type ALL_F32."""
    import gguf
    r = gguf.GGUFReader(str(src))
    arch = r.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    w = gguf.GGUFWriter(str(out), arch)
    for f in r.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        kind = f.types[0]
        value = int(gguf.LlamaFileType.ALL_F32) if f.name == gguf.Keys.General.FILE_TYPE else f.contents()
        w.add_key_value(f.name, value, kind, sub_type=f.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(out)


def llama_cpp_source(build_dir: Path) -> dict:
    """The llama.cpp tree dump_logits was built from (CMakeCache's LLAMA_CPP_DIR), its git commit and the binary's
    own version line."""
    cache = (build_dir / "CMakeCache.txt").read_text()
    src = re.search(r"^LLAMA_CPP_DIR:\w+=(.*)$", cache, re.M).group(1)
    commit = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    native = re.search(r"^GGML_NATIVE:\w+=(.*)$", cache, re.M)
    v = subprocess.run([str(build_dir / "dump_logits"), "-", "-", "--version"], capture_output=True, text=True)
    return {"source": src, "commit": commit or "unknown", "version": (v.stdout + v.stderr).strip().splitlines(),
            "GGML_NATIVE": native.group(1) if native else None}


def dump_logits(binary: Path, model: Path, ids_list, cvec: Path | None, work: Path, name: str,
                threads: int) -> np.ndarray:
    """llama.cpp's logits at every position of every prompt, (tokens, vocab) float32 (a memory map)."""
    tokens, out, log = work / "tokens.txt", work / f"{name}.f32", work / f"{name}.log"
    tokens.write_text("".join(" ".join(map(str, ids[0].tolist())) + "\n" for ids in ids_list))
    cmd = [str(binary), str(tokens), str(out), "-m", str(model), "-t", str(threads), "-c", "2048",
           "-ctk", "f32", "-ctv", "f32"]   # F32 KV cache (llama.cpp keeps F16 by default)
    cmd += ["--control-vector", str(cvec)] if cvec else []
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if p.returncode != 0:
        raise SystemExit(f"dump_logits failed ({p.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    n_vocab = int(p.stdout.split()[-1])
    return np.memmap(out, dtype=np.float32, mode="r").reshape(-1, n_vocab)


def compare_runs(lm, plan, ids_list, base, steered, control) -> dict:
    """Per prompt: ours unsteered and steered beside llama.cpp's unsteered, steered and control logits."""
    cmp_plan, cmp_ctl = C.Comparison(), C.Comparison()
    base_err, base_top, at = 0.0, 0, 0
    for ids in ids_list:
        T = ids.shape[1]
        ours_b, ours_s = C.our_logits(lm, None, [ids])[0], C.our_logits(lm, plan, [ids])[0]
        lb, ls, lc = (torch.from_numpy(np.asarray(x[at:at + T], dtype=np.float64)) for x in (base, steered, control))
        at += T
        base_err = max(base_err, (ours_b - lb).abs().max().item())
        base_top += int((ours_b.argmax(-1) == lb.argmax(-1)).sum())
        cmp_plan.add(ours_s - ours_b, ls - lb, ours_s, ls)
        cmp_ctl.add(ours_s - ours_b, lc - lb, ours_s, lc)
    unsteered = {"max abs difference of logits": base_err, "top token agrees": base_top / at}
    return {"unsteered llama.cpp vs ours": unsteered,
            "llama.cpp vs ours": cmp_plan.result(), "control (vectors one layer off) vs ours": cmp_ctl.result()}


def lscpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"^Model name:\s*(.*)$", out, re.M)
    return m.group(1).strip() if m else "unknown"


def main(argv=None):
    ap = base_parser(__doc__)
    ap.add_argument("--build-dir", required=True, help="the cmake build of bench/llamacpp (holds dump_logits)")
    ap.add_argument("--plan", default=None, help="a plan.json (default: a random plan, see --layers/--norm)")
    ap.add_argument("--layers", default="3,10,20,28", help="layers of the random plan")
    ap.add_argument("--norm", type=float, default=4.0, help="norm of each random vector")
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--work-dir", default=None, help="keep the F32 GGUF, control vectors and logits here")
    args = finish_args(ap.parse_args(argv))
    build = Path(args.build_dir).resolve()
    lm = load_model("default")
    plan = load_plan(args.plan) if args.plan else C.random_plan(lm, [int(x) for x in args.layers.split(",")],
                                                               args.norm, args.seed)
    plan.all_positions = True
    control = C.shifted(plan, C.control_shift(plan))
    ids_list = C.task_prompt_ids(lm, args.task, args.n, args.seed)
    n_tok = sum(i.shape[1] for i in ids_list)
    print(f"{len(ids_list)} prompts, {n_tok} tokens", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        model = write_f32_gguf(smollm2_gguf(), work / "model-f32.gguf")
        cv, cv_ctl = work / "plan.gguf", work / "control.gguf"
        export_plan(plan, "gguf-control-vector", cv)
        export_plan(control, "gguf-control-vector", cv_ctl)
        runs = {name: dump_logits(build / "dump_logits", model, ids_list, f, work, name, args.threads)
                for name, f in (("unsteered", None), ("steered", cv), ("control", cv_ctl))}
        print(f"llama.cpp done ({time.time() - t0:.0f} s)", flush=True)
        res = compare_runs(lm, plan, ids_list, runs["unsteered"], runs["steered"], runs["control"])
    res["verdict"] = C.verdict(res["llama.cpp vs ours"], res["control (vectors one layer off) vs ours"])
    res = {"plan": args.plan or f"random, layers {args.layers}, norm {args.norm}, seed {args.seed}",
           "layers": C.plan_layers(plan), "control layers": C.plan_layers(control), "task": args.task,
           "prompts": len(ids_list), "tokens": n_tok, "model": f"{lm.name}: ours float32 de-quantised from "
           f"{smollm2_gguf().name}, llama.cpp the same tensors written as an F32 GGUF",
           "path": "dump_logits: common_params_parse(--control-vector) + common_init_from_params "
                   "(common_control_vector_load, llama_apply_adapter_cvec), logits at every position",
           "llama.cpp": llama_cpp_source(build), "cpu (lscpu Model name)": lscpu_model(),
           "command": "python -m bench.llamacpp_check " + " ".join(sys.argv[1:]), **res}
    for k in ("unsteered llama.cpp vs ours", "llama.cpp vs ours", "control (vectors one layer off) vs ours",
              "verdict"):
        print(k, {n: (round(v, 6) if isinstance(v, float) else v) for n, v in res[k].items()})
    write_json("llamacpp-check", args, res)


if __name__ == "__main__":
    main()

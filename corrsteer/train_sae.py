"""Train TopK SAEs on residual-stream activations, fast on a CPU.

Why our own loop rather than sae-lens's SAETrainer: a CPU budget of ~30 s per layer. The step below costs one
dense GEMM (choosing the top k) plus O(tokens * k * d_in) sparse work: the encoder's backward multiplies by the
sparse [tokens, d_sae] gradient (k entries a row) and the decoder is an embedding_bag over the k chosen rows, so
backward never touches a dense [tokens, d_sae] matrix (a dense TopK step costs ~3 GEMMs).

Training happens on normalised inputs x' = (x - mu) / s (s = RMS norm of the centred data), so one learning rate
serves every layer, including late layers whose residual norms are 10x larger; the saved SAE folds mu and s back in,
so it takes raw residuals: W_enc = W'/s, b_dec = s*b' + mu, W_dec = s*W'_dec.
Dead latents (not fired for `dead_after` tokens) are re-pointed at the worst-reconstructed inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from corrsteer_kernels import SAEWeights

from .config import TrainConfig   # the trainer's settings: defaults and help live there


class _TopKEncode(torch.autograd.Function):
    """acts, idx = relu(topk(xc @ W_enc_T.T + b_enc)); backward touches only the n*k selected entries."""

    @staticmethod
    def forward(ctx, xc, W_enc_T, b_enc, k):
        vals, idx = torch.addmm(b_enc, xc, W_enc_T.t()).topk(k, dim=1)
        acts = vals.clamp(min=0)
        ctx.save_for_backward(xc, W_enc_T, idx, vals > 0)
        ctx.mark_non_differentiable(idx)
        return acts, idx

    @staticmethod
    def backward(ctx, grad_acts, _grad_idx):
        xc, W_enc_T, idx, live = ctx.saved_tensors
        n, k = idx.shape
        g = (grad_acts * live).flatten()
        rows = torch.arange(n).repeat_interleave(k)
        G = torch.sparse_coo_tensor(torch.stack([rows, idx.flatten()]), g, (n, W_enc_T.shape[0]),
                                    check_invariants=False).coalesce()
        grad_xc = torch.sparse.mm(G, W_enc_T)
        grad_W = torch.sparse.mm(G.t().coalesce(), xc)
        grad_b = torch.zeros(W_enc_T.shape[0], dtype=g.dtype).index_add_(0, idx.flatten(), g)
        return grad_xc, grad_W, grad_b, None


class TopKTrainer:
    def __init__(self, x: torch.Tensor, cfg: TrainConfig):
        self.cfg = cfg
        self.x = x
        self.mu = x.mean(0)
        self.scale = float((x - self.mu).pow(2).sum(1).mean().sqrt()) or 1.0
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
        self.opt = torch.optim.Adam(self.p.values(), lr=cfg.lr, betas=(0.9, 0.999))
        self.since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)

    def normalise(self, x):
        return (x - self.mu) / self.scale

    def step(self, xb: torch.Tensor) -> torch.Tensor:
        p, k = self.p, self.cfg.k
        acts, idx = _TopKEncode.apply(xb - p["b_dec"], p["W_enc_T"], p["b_enc"], k)
        recon = F.embedding_bag(idx, p["W_dec"], per_sample_weights=acts, mode="sum") + p["b_dec"]
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
        cfg = self.cfg
        xn = self.normalise(x)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        total = max(1, int(math.ceil(cfg.epochs * x.shape[0] / cfg.batch_size)))
        sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, 2 * (1 - s / total) + 0.05))
        perm = torch.randperm(x.shape[0], generator=g)
        pos = 0
        bar = tqdm(range(total), desc=desc, leave=False, disable=not progress)
        for s in bar:
            if pos + cfg.batch_size > x.shape[0]:
                perm, pos = torch.randperm(x.shape[0], generator=g), 0
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
        return self.fit(x, desc, progress)

    def weights(self) -> SAEWeights:
        """The SAE in raw residual units (normalisation folded in)."""
        p, s = {n: t.detach() for n, t in self.p.items()}, self.scale
        return SAEWeights(W_enc=(p["W_enc_T"].t() / s).contiguous(), b_enc=p["b_enc"].clone(),
                          b_dec=p["b_dec"] * s + self.mu, k=self.cfg.k, activation="topk",
                          W_dec=(p["W_dec"] * s).contiguous())


@torch.no_grad()
def evaluate(sae: SAEWeights, x: torch.Tensor, chunk: int = 4096) -> dict:
    """FVE = 1 - sum|x - x_hat|^2 / sum|x - mean x|^2, mean L0, and the fraction of latents that never fire."""
    err = 0.0
    l0 = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
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
def _chats(dataset: str | None):
    from .corpus import QUESTIONS, chat_documents
    if dataset is None:
        return chat_documents()
    from datasets import load_dataset   # online use only
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


def train_bank(lm, out_dir, layers=None, point: str = "post", cfg: TrainConfig | None = None, max_len: int = 256,
               dataset: str | None = None, force: bool = False, progress: bool = True) -> list[dict]:
    """Train (or reuse) one TopK SAE per layer, save each as a sae-lens directory under out_dir as soon as it is
    done (an interrupted run resumes where it stopped), and return the per-layer quality rows on held-out text
    (cfg.eval_tokens of them; cfg.train_tokens training activations a layer), then one row of totals."""
    import time
    from pathlib import Path

    from .activations import collect, tokenize_chats
    from .hooks import HookPoint
    from .saes import load_sae_dir, save_sae_dir

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    points = [HookPoint(L, point) for L in layers]
    todo = [hp for hp in points if force or not (out_dir / hp.hook_name / "cfg.json").exists()]
    seqs, prefix = tokenize_chats(lm, _chats(dataset), max_len)
    n_eval_docs = max(1, len(seqs) // 10)
    train_seqs, eval_seqs = seqs[:-n_eval_docs], seqs[-n_eval_docs:]
    t0 = time.time()
    ev = collect(lm, eval_seqs, points, cfg.eval_tokens, skip=prefix, desc="held-out activations")
    tr = collect(lm, train_seqs, todo, cfg.train_tokens, skip=prefix, desc="training activations") if todo else {}
    t_collect = time.time() - t0
    rows = []
    for hp in tqdm(points, desc="SAEs", disable=not progress):
        path = out_dir / hp.hook_name
        t = time.time()
        if hp in tr:
            trainer = TopKTrainer(tr.pop(hp), cfg).fit_from_raw(desc=f"layer {hp.layer}", progress=progress)
            sae = trainer.weights()
            q = evaluate(sae, ev[hp])
            save_sae_dir(path, sae, hp, lm.name, extra={"trained_by": "corrsteer", "train_tokens": cfg.train_tokens,
                                                        "epochs": cfg.epochs, "heldout": q})
        else:
            sae = load_sae_dir(path).sae
            q = evaluate(sae, ev[hp])
        rows.append(dict(layer=hp.layer, hook=hp.hook_name, d_sae=sae.d_sae, k=sae.k, seconds=time.time() - t, **q))
    rows.append(dict(collect_seconds=t_collect, eval_tokens=int(ev[points[0]].shape[0]),
                     train_tokens=cfg.train_tokens))
    return rows

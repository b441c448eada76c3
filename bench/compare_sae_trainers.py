"""Our TopK trainer (corrsteer.sae.train.TopKTrainer) vs sae-lens's SAETrainer on the same activations.

Both train a 576 -> 2304, k = 32 TopK SAE per layer on the same in-memory training activations of the default model
(the `corrsteer train-sae` training text), for the same number of tokens (epochs x train tokens) and batch size, on
the same CPU threads; both are scored by corrsteer.sae.train.sae_quality on the same held-out activations (the built-in
tasks' prompts with the model's answers, and held-out docstrings): FVE, L0, dead fraction, seconds per layer.

    CORRSTEER_CACHE=... python3 -m bench.compare_sae_trainers --layers 3,10,17,24,28 \
        --out bench/results/sae-trainers-cpu
sae-lens runs twice: with its TopK defaults (lr 3e-4, its aux loss, decoder norm rescaling, input scaling to
sqrt(d_in)) and with our learning rate and linear-decay schedule.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def sae_lens_fit(x: torch.Tensor, cfg, lr: float, decay: bool) -> tuple:
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    from corrsteer_kernels import SAEWeights

    steps = int(cfg.epochs * x.shape[0] / cfg.batch_size)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=cfg.d_sae, k=cfg.k, dtype="float32",
                                                device="cpu", normalize_activations="expected_average_only_in"))
    g = torch.Generator().manual_seed(cfg.seed + 1)

    def provider():
        while True:
            perm = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0] - cfg.batch_size + 1, cfg.batch_size):
                yield x[perm[i:i + cfg.batch_size]]

    tcfg = SAETrainerConfig(total_training_samples=steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size,
                            lr=lr, lr_end=lr * 0.05 if decay else lr,
                            lr_scheduler_name="constant", lr_decay_steps=steps // 2 if decay else 0,
                            device="cpu", dead_feature_window=max(1, cfg.dead_after // cfg.batch_size),
                            n_batches_for_norm_estimate=20)
    trained = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider()).fit()
    return SAEWeights.from_sae_lens(trained)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", default="3,10,17,24,28")
    ap.add_argument("--out", default="bench/results/sae-trainers-cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated substrings of the trainers to run")
    ap.add_argument("--acts", default=None, help="keep the activations in this folder (reused when present)")
    args = ap.parse_args(argv)

    from corrsteer.config import TrainConfig
    from corrsteer.model.hooks import HookPoint
    from corrsteer.model.lm import load_model
    from corrsteer.sae.activations import collect_to_disk, load_layer
    from corrsteer.sae.train import TopKTrainer, fast_lm, sae_quality, training_text
    from corrsteer.settings import parse_layers

    torch.set_num_threads(args.threads)
    cfg = TrainConfig()
    lm = load_model("default")
    points = [HookPoint(L, "post") for L in parse_layers(args.layers)]
    fast = fast_lm(lm)
    text = training_text(fast, cfg)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.acts or tmp)
        kw = dict(skip=text["prefix"])
        if not (tmp / "done").exists():
            collect_to_disk(lm, text["eval_docs"], points, cfg.eval_tokens, tmp / "docs", **kw)
            collect_to_disk(lm, text["eval_chat"], points, cfg.eval_tokens, tmp / "chat", **kw)
            collect_to_disk(fast, text["train"], points, cfg.train_tokens, tmp / "train", **kw)
            (tmp / "done").write_text("")
        for hp in points:
            x = load_layer(tmp / "train", hp, lm.d_model)
            docs, chat = load_layer(tmp / "docs", hp, lm.d_model), load_layer(tmp / "chat", hp, lm.d_model)
            fp32, bf16 = replace(cfg, matmul_dtype="float32"), replace(cfg, matmul_dtype="bfloat16")
            trainers = {
                "corrsteer, bf16 matmuls": lambda: TopKTrainer(x, bf16).fit(x, progress=False).weights(),
                "corrsteer (fp32, the default)": lambda: TopKTrainer(x, fp32).fit(x, progress=False).weights(),
                "sae-lens defaults (lr 3e-4)": lambda: sae_lens_fit(x, cfg, 3e-4, decay=False),
                f"sae-lens, lr {cfg.lr:g} + decay": lambda: sae_lens_fit(x, cfg, cfg.lr, decay=True),
            }
            for name, fit in trainers.items():
                if args.only and not any(o in name for o in args.only.split(",")):
                    continue
                t = time.time()
                sae = fit()
                sec = time.time() - t
                qc, qd, both = sae_quality(sae, chat), sae_quality(sae, docs), sae_quality(sae, torch.cat([docs, chat]))
                row = dict(layer=hp.layer, trainer=name, fve_chat=qc["fve"], fve_docs=qd["fve"], l0=qc["l0"],
                           dead=both["dead"], seconds=sec, load_avg=os.getloadavg()[0])
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(model=lm.name, train_tokens=cfg.train_tokens, epochs=cfg.epochs, batch_size=cfg.batch_size,
                d_sae=cfg.d_sae, k=cfg.k, threads=args.threads, torch=torch.__version__,
                sae_lens=__import__("sae_lens").__version__, command=" ".join(["python", *sys.argv]))
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    lines = [f"# TopK SAE trainers on the same activations ({lm.name}, CPU, {args.threads} threads)", "",
             f"{cfg.train_tokens} training tokens x {cfg.epochs:g} epochs, batch {cfg.batch_size}, d_sae {cfg.d_sae}, "
             f"k {cfg.k}; held out: {cfg.eval_tokens} tokens of task prompts + answers (chat) and of docstrings. "
             f"torch {torch.__version__}, sae-lens {meta['sae_lens']}.", "",
             "| layer | trainer | FVE chat | FVE docs | L0 | dead | s | load avg |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['trainer']} | {r['fve_chat']:.3f} | {r['fve_docs']:.3f} | {r['l0']:.1f} | "
                     f"{100 * r['dead']:.1f}% | {r['seconds']:.1f} | {r['load_avg']:.1f} |")
    lines.append("")
    for name in dict.fromkeys(r["trainer"] for r in rows):
        rs = [r for r in rows if r["trainer"] == name]
        lines.append(f"- {name}: median FVE chat {statistics.median(r['fve_chat'] for r in rs):.3f}, docs "
                     f"{statistics.median(r['fve_docs'] for r in rs):.3f}, "
                     f"mean {statistics.mean(r['seconds'] for r in rs):.1f} s "
                     "a layer")
    lines += ["", f"Command: `{meta['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

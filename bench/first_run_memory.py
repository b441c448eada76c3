"""Peak resident memory of the first run's memory-hungry steps, before and after issue 41's changes, each case in a
fresh process (the numbers are corrsteer.profile's per-stage peaks, in MB):

  model-copy   the bf16 copy of the default model that writes the training text: copy.deepcopy(model).to(bf16)
               (before) vs sae.train.bf16_copy (after), the float32 model loaded and run once beforehand
  layer        one layer's training on [tokens, 576] float16 activations read as `train_bank` reads them: loading,
               TopKTrainer(...) and fit_from_raw (after), and the same with the old trainer's temporaries (before:
               (x - mu).pow(2) and (x - mu) / s kept beside x); the SAEs of both are checked equal
  heap         the RSS left after training two such layers, without and with the heap trimmed between them

    python -m bench.first_run_memory [--quick]     # -> bench/results/first-run-memory-cpu-<date>.json
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import numpy as np
import torch

from bench.common import ROOT, base_parser, finish_args, write_json
from corrsteer import profile as P

CASES = ("model-copy:before", "model-copy:after", "layer:before", "layer:after", "heap:keep", "heap:trim")


def _rss_mb() -> float:
    return round(P._status_kb("VmRSS") / 1024, 1)


def model_copy(which: str) -> dict:
    import copy

    from corrsteer.model.lm import load_model
    from corrsteer.sae.train import bf16_copy
    lm = load_model("default")
    with torch.no_grad():
        lm.model(torch.tensor([[1, 2, 3]]))
    before = _rss_mb()
    with P.stage("copy") as rec:
        m = copy.deepcopy(lm.model).to(torch.bfloat16) if which == "before" else bf16_copy(lm.model)
    return dict(rss_before_mb=before, peak_mb=rec["peak_rss_mb"], rss_after_mb=_rss_mb(),
                params=sum(p.numel() for p in m.parameters()))


def _activations(tokens: int, layers: int = 1):
    from corrsteer.model.hooks import HookPoint
    from corrsteer.sae.activations import layer_file
    folder = tempfile.mkdtemp()
    g = torch.Generator().manual_seed(0)
    for L in range(layers):
        (torch.randn(tokens, 576, generator=g) * 3).numpy().astype(np.float16).tofile(
            layer_file(folder, HookPoint(L, "post")))
    return folder, [HookPoint(L, "post") for L in range(layers)]


def _old_fit(tr, cfg):
    """The trainer as it was before: scale from (x - mu).pow(2), fit(x) normalising beside the raw activations."""
    x, tr.x = tr.x, None
    tr.scale = float((x - tr.mu).pow(2).sum(1).mean().sqrt()) or 1.0
    return tr.fit_normalised((x - tr.mu) / tr.scale, progress=False)


def layer(which: str, tokens: int, epochs: float) -> dict:
    from corrsteer.config import TrainConfig
    from corrsteer.sae.activations import load_layer
    from corrsteer.sae.train import TopKTrainer
    folder, (hp,) = _activations(tokens)
    torch.set_num_threads(2)
    cfg = TrainConfig(epochs=epochs)
    before = _rss_mb()
    with P.stage("layer") as rec:
        x = load_layer(folder, hp, 576)
        if which == "before":
            (x - x.mean(0)).pow(2)              # the old constructor's second [n, d] temporary, at its peak
        tr = TopKTrainer(x, cfg)
        del x
        w = (_old_fit(tr, cfg) if which == "before" else tr.fit_from_raw(progress=False)).weights()
    return dict(rss_before_mb=before, peak_mb=rec["peak_rss_mb"], tokens=tokens, epochs=epochs,
                checksum=[float(w.W_enc.double().sum()), float(w.W_dec.double().sum())])


def heap(which: str, tokens: int, epochs: float) -> dict:
    from corrsteer.config import TrainConfig
    from corrsteer.sae.activations import load_layer
    from corrsteer.sae.train import TopKTrainer
    folder, hps = _activations(tokens, 2)
    torch.set_num_threads(2)
    out = dict(rss_before_mb=_rss_mb(), rss_after_layer_mb=[])
    for hp in hps:
        tr = TopKTrainer(load_layer(folder, hp, 576), TrainConfig(epochs=epochs))
        tr.fit_from_raw(progress=False).weights()
        del tr
        if which == "trim":
            P.trim_heap()
        out["rss_after_layer_mb"].append(_rss_mb())
    return out


def child(case: str, tokens: int, epochs: float) -> dict:
    kind, which = case.split(":")
    if kind == "model-copy":
        return model_copy(which)
    return (layer if kind == "layer" else heap)(which, tokens, epochs)


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--child", default=None, help=f"one case in this process: {', '.join(CASES)}")
    ap.add_argument("--tokens", type=int, default=80_000, help="activations per layer (train-sae's default)")
    ap.add_argument("--epochs", type=float, default=0.1, help="training passes (memory does not depend on them)")
    args = finish_args(ap.parse_args())
    if args.quick:
        args.tokens, args.epochs = 8_000, 0.05
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.epochs)))
        return
    results = {}
    for case in CASES:
        if args.quick and case.startswith("model-copy"):
            continue            # needs the default model's wheel and ~1.5 GB
        cmd = [sys.executable, "-m", "bench.first_run_memory", "--child", case, "--tokens", str(args.tokens),
               "--epochs", str(args.epochs)]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        results[case] = json.loads(r.stdout.strip().splitlines()[-1])
        print(case, results[case], flush=True)
    lb, la = results["layer:before"], results["layer:after"]
    assert lb["checksum"] == la["checksum"], "the trainer's memory savings changed the SAE"
    write_json("first-run-memory", args, dict(cases=results, machine=P.machine(),
                                              command="python -m bench.first_run_memory" +
                                                      (" --quick" if args.quick else "")))


if __name__ == "__main__":
    main()

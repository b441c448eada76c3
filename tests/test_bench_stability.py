"""bench/stability.py's reading of finished runs: balanced accuracies, the draws' mean, paired-bootstrap
differences, the verdict, P's layer overlap and decoder cosines, on synthetic run directories."""
import json
import random

import pytest
import torch
from safetensors.torch import save_file

from bench import stability as B


def _run_dir(path, n, p_right, draw_right, prompt_right, layers, seed=0):
    """A run directory with predictions for two classes: each row right with its given probability."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    (path / "plans").mkdir()
    rows = []
    variants = {"baseline": 0.5, B.P: p_right, "few-shot": prompt_right, "prompting": prompt_right - 0.1,
                "mean-difference": 0.5, "control-shuffled-outcome": 0.5}
    variants |= {f"control-random-feature-{i}": draw_right for i in range(1, 6)}
    for v, q in variants.items():
        for i in range(n):
            gold = "a" if i % 2 else "b"
            right = rng.random() < q
            rows.append(dict(variant=v, id=f"x{i:03d}", gold=gold, pred=gold if right else "c", correct=float(right)))
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = dict(entries=[dict(layer=L, features=[f], coefficients=[1.0], r=[0.1]) for L, f in layers])
    (path / "plans" / "P.json").write_text(json.dumps(plan))
    return path


def test_cell_gives_balanced_accuracies_intervals_and_the_verdict(tmp_path):
    gain = B.cell(_run_dir(tmp_path / "g", 200, 0.9, 0.5, 0.5, [(1, 3)]), reps=400, seed=0)
    assert gain["P"] > 0.8 and 0.4 < gain["random_mean"] < 0.6 and len(gain["random_draws"]) == 5
    lo_hi = gain["P_minus_random"]
    assert lo_hi[1] < lo_hi[0] < lo_hi[2] and lo_hi[1] > 0.2
    assert gain["best_prompt_row"] == "few-shot" and gain["share_P_beats"] == 1.0 and gain["verdict"]
    assert gain["P_layers"] == [1] and gain["P_features"] == [[1, 3]]
    tie = B.cell(_run_dir(tmp_path / "t", 200, 0.55, 0.55, 0.5, [(2, 4)], seed=1), reps=400, seed=0)
    assert tie["P_minus_random"][1] < 0 < tie["P_minus_random"][2] and not tie["verdict"]
    doc = dict(task="t", date="d", command="c", run_args=[], train_args=[], device="cpu", commit="x",
               train_seeds=[0, 1], split_seeds=[0], cells=[gain, tie], p_overlap=[], banks=[])
    md = B.markdown(doc)
    assert "| CorrSteer-P |" in md and "Cells with that gain: 1 of 2." in md and "no gain" in md
    gain["p_filter_baseline"] = tie
    md = B.markdown(dict(doc, compare_p_filter="baseline"))
    assert "--p-filter baseline: P" in md and f"| g | {gain['P']:.3f} |" in md and "[1] vs [2]" in md


def test_old_runs_single_random_control_is_read(tmp_path):
    d = _run_dir(tmp_path / "o", 20, 0.9, 0.5, 0.5, [(1, 3)])
    text = (d / "predictions.jsonl").read_text().replace("control-random-feature-1", "control-random-feature")
    lines = [ln for ln in text.splitlines() if "control-random-feature-" not in ln]
    (d / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    c = B.cell(d, reps=50, seed=0)
    assert len(c["random_draws"]) == 1


def _bank(path, layer, w):
    d = path / f"blocks.{layer}.hook_resid_post"
    d.mkdir(parents=True)
    save_file({"W_dec": w.contiguous()}, str(d / "sae_weights.safetensors"))
    heldout = dict(fve=0.8, fve_chat=0.8, fve_docs=0.7, l0=3.0, dead=0.0)
    (d / "cfg.json").write_text(json.dumps(dict(d_sae=w.shape[0], k=3, metadata=dict(heldout=heldout, seconds=1.0))))


def test_overlap_and_bank_matching_use_decoder_directions(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, generator=g)
    perm = torch.tensor([3, 0, 1, 2, 5, 4])
    other = w[perm].clone()
    other[4] = torch.randn(4, generator=g)                # one latent without a match (almost surely)
    _bank(tmp_path / "a", 1, w)
    _bank(tmp_path / "b", 1, other)
    banks = {0: tmp_path / "a", 1: tmp_path / "b"}
    cells = {(0, 0): dict(P_layers=[1, 5], P_features=[[1, 0], [5, 2]]),
             (1, 0): dict(P_layers=[1], P_features=[[1, 1]])}     # b's latent 1 is a's latent 0
    (o,) = B.p_overlap(cells, banks)
    assert o["jaccard"] == 0.5 and o["shared_layers"] == [1] and o["feature_cosine"] == [pytest.approx(1.0)]
    pair = B.bank_pair(banks[0], banks[1], [1])
    assert pair["matched_share_median"] == pytest.approx(5 / 6) and pair["fve_median"] == [0.8, 0.8]


def test_rules_differ_only_when_the_random_filter_drops_a_layer(tmp_path):
    v = dict(baseline=0.5, per_layer={"1": 0.7, "2": 0.6, "3": 0.4}, random_per_layer={"1": 0.55, "2": 0.5})
    (tmp_path / "validation.json").write_text(json.dumps(v))
    assert not B.rules_differ(tmp_path)
    v["random_per_layer"]["2"] = 0.65
    (tmp_path / "validation.json").write_text(json.dumps(v))
    assert B.rules_differ(tmp_path)


def test_cell_gives_P_minus_every_other_row_and_reads_free_form_as_accuracy(tmp_path):
    d = _run_dir(tmp_path / "f", 60, 0.9, 0.5, 0.5, [(1, 3)])
    c = B.cell(d, reps=100, seed=0)
    assert set(c["P_minus"]) == {"baseline", "mean-difference", "control-shuffled-outcome", "few-shot", "prompting"}
    assert c["measure"] == "balanced accuracy"
    rows = [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]
    for r in rows:                       # classes of very different sizes: accuracy and balanced accuracy differ
        r["gold"] = "a" if int(r["id"][1:]) % 6 else "b"
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "report_inputs.json").write_text(json.dumps(dict(classes=False)))
    free = B.cell(d, reps=100, seed=0)
    p_rows = [r for r in rows if r["variant"] == B.P]
    assert free["measure"] == "accuracy" and free["P"] == pytest.approx(sum(r["correct"] for r in p_rows) / 60)
    (d / "report_inputs.json").write_text(json.dumps(dict(classes=True)))
    assert B.cell(d, reps=100, seed=0)["P"] != free["P"]
    doc = dict(task="t", date="d", command="c", run_args=[], train_args=[], device="cpu", commit="x",
               train_seeds=[0], split_seeds=[0], cells=[c], p_overlap=[], banks=[])
    assert "P − mean-difference" in B.markdown(doc)


def test_finished_only_lists_the_cells_it_read_and_a_run_in_progress_is_not_finished(tmp_path):
    d = _run_dir(tmp_path / "t0-s0", 40, 0.9, 0.5, 0.5, [(1, 3)])
    assert not B.finished(d)                            # no report.md yet
    (d / "report.md").write_text("r")
    assert B.finished(d)
    (d / "IN_PROGRESS").write_text("")
    assert not B.finished(d)
    c = B.cell(d, reps=50, seed=0)
    doc = dict(task="t", date="d", command="c", run_args=[], train_args=[], device="cpu", commit="x",
               train_seeds=[0, 1, 2], split_seeds=[0, 1], cells=[c], p_overlap=[], banks=[], finished_only=True)
    md = B.markdown(doc)
    assert "over 1 cells (t0-s0 of training seeds [0, 1, 2] x split seeds [0, 1]; only the cells finished)" in md

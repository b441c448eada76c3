"""A real SIGKILL in every stage of `corrsteer run` (collect, rank, validate, prefix search, test, report) and during
`corrsteer train-sae`: a child process running the command through the CLI kills itself with SIGKILL at one point
(kill_child.py patches the point from outside; corrsteer has no test hooks), the same command is run again in the
same folder, and every file it leaves is byte-identical to an uninterrupted run's, with only the unit of work the
child died in redone.

The children are forked from a warm server process (kill_child.py --serve) so that a case costs its run, not the
~5 s of importing torch and transformers: each child still loads the model, SAEs and task from files, runs the CLI,
and dies by a real SIGKILL (exit status -9), leaving its lock file, IN_PROGRESS marker and checkpoints as a killed
run would. Every run of a case uses its own folder and the relative `--out out` (or `--sae-dir saes`), so config.json
is compared byte for byte too; the only fields excluded anywhere are the SAE trainer's wall-clock seconds.
"""
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fakes import tiny_bank
from safetensors import safe_open
from safetensors.torch import load_file

import corrsteer
import corrsteer_kernels
from corrsteer.pipeline.runner import CKPT_DIR
from corrsteer.runtime.checkpoint import MARKER
from corrsteer.runtime.outdir import LOCK
from corrsteer.sae.bank import save_sae_dir

HERE = Path(__file__).resolve().parent
# stage -> (kill point, hit): the hit-th generation batch of a generating stage (>= 2: after a checkpoint of that
# stage; the prefix search has one batch here: it dies after validate's last checkpoint), the first ranking call
# after collection, the top-features plot (predictions.jsonl and r_per_layer.png written, report.md not)
STAGES = {"collect": ("collect", 2), "rank": ("rank", 1), "validate": ("validate", 2), "prefix": ("prefix", 1),
          "test": ("test", 3), "prompting": ("test-few-shot", 1), "report": ("report", 1),
          # and while writing: collect's 2nd checkpoint half written (its temporary file left); the lock of --out
          # taken (its temporary file left)
          "checkpoint-write": ("checkpoint-write", 2), "lock": ("lock", 1)}
LEFT_BEHIND = {"checkpoint-write": f"{CKPT_DIR}/.collect.safetensors", "lock": f".{LOCK}"}
GENERATING = ("collect", "validate", "prefix", "test", "test-prompting", "test-few-shot")
TINY_SAE = ["--d-sae", "96", "--k", "8", "--epochs", "2", "--batch-size", "128", "--train-tokens", "1500",
            "--eval-tokens", "400", "--chat-prompts", "24", "--answer-tokens", "8", "--eval-task-prompts", "3",
            "--threads", "1"]


@dataclass
class Child:
    rc: int
    pid: int
    log: list[str]          # units of work started, in order (the last one of a killed child: the one it died in)
    stderr: str


class Server:
    """kill_child.py --serve: one job (a JSON line) in, the forked child's exit status out."""

    def __init__(self, model_dir: Path, tmp: Path):
        path = os.pathsep.join([str(Path(corrsteer_kernels.__file__).resolve().parents[1]),
                                str(Path(corrsteer.__file__).resolve().parents[1]), str(HERE.parent)])
        env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", CORRSTEER_CACHE=str(tmp / "cache"))
        self.err = tmp / "server.err"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "kill_child.py"), "--serve", str(model_dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err.open("w"),
                                     text=True, env=env)
        assert self._reply().get("ready")

    def _reply(self, timeout: float = 300) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"the child server did not answer:\n{self.err.read_text()[-3000:]}"
        return json.loads(line)

    def run(self, cwd: Path, argv: list[str], tag: str, point: str = "none", k: int = 0, env=None) -> Child:
        cwd.mkdir(parents=True, exist_ok=True)
        files = {n: str(cwd / f"{tag}.{n}") for n in ("log", "stdout", "stderr")}
        self.proc.stdin.write(json.dumps(dict(cwd=str(cwd), argv=argv, point=point, k=k, env=env or {}, **files))
                              + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        log = Path(files["log"])
        return Child(reply["rc"], reply["pid"], log.read_text().split() if log.exists() else [],
                     Path(files["stderr"]).read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def root(tiny_lm, tmp_path_factory):
    """The tiny model (with the default model's tokenizer) and three random SAEs as directories."""
    root = tmp_path_factory.mktemp("sigkill")
    tiny_lm.model.save_pretrained(root / "model")
    tiny_lm.tokenizer.save_pretrained(root / "model")
    for _, e in tiny_bank(tiny_lm, layers=(0, 2, 3)):
        save_sae_dir(root / "saes" / e.hook.hook_name, e.sae, e.hook, "tiny")
    return root


@pytest.fixture(scope="module")
def server(root):
    s = Server(root / "model", root)
    yield s
    s.close()


def run_args(root: Path) -> list[str]:
    return ["run", "--model", str(root / "model"), "--saes", str(root / "saes"), "--n-select", "12", "--n-val", "6",
            "--n-test", "8", "--batch-size", "4", "--device", "cpu", "--out", "out"]


def train_args(root: Path) -> list[str]:
    return ["train-sae", "--model", str(root / "model"), "--layers", "0,1", "--sae-dir", "saes", "--device", "cpu",
            *TINY_SAE]


def tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under folder (hidden files included); a checkpoint as its metadata and
    tensors' bytes (safetensors writes metadata keys in a per-process hash order, so equal checkpoints written by
    two processes differ in their header bytes)."""
    return {str(p.relative_to(folder)): checkpoint(p) if p.parent.name == CKPT_DIR else
            without_profile(p) if p.name == "config.json" else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def without_profile(path: Path) -> dict:
    """config.json without its "profile" (wall / CPU seconds and peak memory of this process: never equal between
    two runs); every other key compared as written."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "profile"}


def checkpoint(path: Path):
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k).view(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()}


def assert_same_tree(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"files that differ from the uninterrupted run's: {differ}"


@pytest.fixture(scope="module")
def clean_run(server, root):
    """An uninterrupted `corrsteer run`: its files and its generation batches."""
    c = server.run(root / "clean-run", run_args(root), "clean")
    assert c.rc == 0, c.stderr[-3000:]
    assert "prefix" in c.log and c.log.count("validate") >= 2 and c.log.count("test") >= 3, c.log
    return tree(root / "clean-run" / "out"), c.log


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_in_a_stage_then_rerun_gives_byte_identical_outputs(server, root, clean_run, tmp_path, stage):
    want, clean_log = clean_run
    point, k = STAGES[stage]
    killed = server.run(tmp_path, run_args(root), "killed", point, k)
    assert killed.rc == -signal.SIGKILL, killed.stderr[-3000:]
    out = tmp_path / "out"
    assert not (out / "report.md").exists()
    assert (out / LOCK).exists() and (out / MARKER).exists() == (point != "lock")
    if point in ("lock", "checkpoint-write"):                   # a temporary file left beside its target
        assert [str(p.relative_to(out)) for p in out.rglob(".*.tmp*")] == [f"{LEFT_BEHIND[point]}.tmp{killed.pid}"]
    if point in GENERATING:
        assert killed.log[-1] == point and killed.log.count(point) == k
    elif point == "checkpoint-write":           # died after generating batch k, while saving its checkpoint
        assert killed.log == ["collect"] * k
    elif point == "rank":
        assert killed.log == [u for u in clean_log if u == "collect"] and (out / "stats.safetensors").exists()
    elif point == "report":    # everything generated, predictions and the first plot written
        assert killed.log == clean_log and (out / "predictions.jsonl").exists() and (out / "r_per_layer.png").exists()

    again = server.run(tmp_path, run_args(root), "rerun")
    assert again.rc == 0, again.stderr[-3000:]
    assert "taking over the lock of pid" in again.stderr
    if point in GENERATING + ("checkpoint-write",) and k > 1:
        stage = "collect" if point == "checkpoint-write" else point
        assert f"{stage}: resuming after batch {k - 1}" in again.stderr
    assert_same_tree(tree(out), want)
    # the batches the killed child finished, and the rerun's, are the clean run's: only the one it died in is redone
    finished = killed.log[:-1] if point in GENERATING + ("checkpoint-write",) else killed.log
    assert finished + again.log == clean_log


# ---------------------------------------------------------------------------------------------------------------
# train-sae
# ---------------------------------------------------------------------------------------------------------------
def sae_files(folder: Path) -> dict:
    """What a trained SAE cache holds, without the wall-clock seconds: every SAE's weights (bytes) and cfg.json, the
    cache's config.json, and quality.json's rows."""
    out = {}
    for p in sorted(folder.glob("blocks.*")):
        cfg = json.loads((p / "cfg.json").read_text())
        cfg["metadata"].pop("seconds")
        out[p.name] = ((p / "sae_weights.safetensors").read_bytes(), cfg)
    out["config.json"] = without_profile(folder / "config.json")
    out["quality rows"] = [{k: v for k, v in r.items() if k != "seconds"}
                           for r in json.loads((folder / "quality.json").read_text())["rows"]]
    return out


@pytest.fixture(scope="module")
def clean_sae(server, root):
    cwd = root / "clean-sae"
    c = server.run(cwd, train_args(root), "clean", env=dict(CORRSTEER_CACHE=str(cwd / "cache")))
    assert c.rc == 0 and c.log == ["fit", "fit"], c.stderr[-3000:]
    return sae_files(cwd / "saes")


@pytest.mark.parametrize("point", ["sae-train", "sae-partial"])
def test_sigkill_during_sae_training_then_rerun_gives_byte_identical_saes(server, root, clean_sae, tmp_path, point):
    """Killed while the second layer trains (the first saved), or with the second layer's weights in its temporary
    folder: the rerun trains the second layer only, leaves no temporary or scratch folder, and its SAEs equal an
    uninterrupted training's."""
    env = dict(CORRSTEER_CACHE=str(tmp_path / "cache"))
    saes = tmp_path / "saes"
    killed = server.run(tmp_path, train_args(root), "killed", point, 3 if point == "sae-train" else 1, env=env)
    assert killed.rc == -signal.SIGKILL and killed.log == ["fit", "fit"], killed.stderr[-3000:]
    first = saes / "blocks.0.hook_resid_post" / "sae_weights.safetensors"
    assert first.exists() and not (saes / "blocks.1.hook_resid_post").exists()
    partials = list(saes.glob(".blocks.1.hook_resid_post.tmp*"))      # corrsteer.files.atomic_dir's folder
    assert bool(partials) == (point == "sae-partial")
    if point == "sae-partial":
        partial = partials[0]             # the weights are in, cfg.json is not: the layer counts as not trained
        assert load_file(str(partial / "sae_weights.safetensors")) and not (partial / "cfg.json").exists()
    before = first.stat().st_mtime_ns

    again = server.run(tmp_path, train_args(root), "rerun", env=env)
    assert again.rc == 0, again.stderr[-3000:]
    assert again.log == ["fit"] and first.stat().st_mtime_ns == before       # layer 0 neither retrained nor rewritten
    assert not list(saes.glob(".*.tmp*")) and not (saes / ".activations").exists()
    assert not (saes / ".corrsteer.lock").exists()
    assert sae_files(saes) == clean_sae

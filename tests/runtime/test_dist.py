"""torchrun: 2 CPU processes (gloo) on the tiny model equal 1 process — the same plans, statistics (bit for bit) and
predictions for `run`, and the same predictions for `eval`; each rank logs its share. And a real kill -9 during the
test stage, then the same command: the outputs equal an uninterrupted run's."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import tiny_bank

from corrsteer.sae.bank import save_sae_dir

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = ROOT / "tests" / "fake_cli.py"       # the corrsteer CLI with the fake task registered as "fake"
FILES = ("plan.json", "plans/S.json", "plans/A.json", "plans/P.json", "stats.safetensors", "predictions.jsonl",
         "validation.json")
pytestmark = pytest.mark.slow


def _env():
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path,
               OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env.setdefault("TRITON_INTERPRET", "1")
    return env


def _cmd(args, nproc=1):
    if nproc == 1:
        return [sys.executable, str(FAKE_CLI), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(FAKE_CLI),
            *args]


def cli(args, nproc=1):
    p = subprocess.run(_cmd(args, nproc), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def dirs(tiny_lm, tmp_path_factory):
    """The tiny model as a HF directory, random SAEs for layers 1 and 2, and one 1-process run."""
    tmp = tmp_path_factory.mktemp("dist")
    tiny_lm.model.save_pretrained(tmp / "model")
    tiny_lm.tokenizer.save_pretrained(tmp / "model")
    for _, e in tiny_bank(tiny_lm, layers=(1, 2)):
        save_sae_dir(tmp / "saes" / e.hook.hook_name, e.sae, e.hook, "model")
    common = ["--model", str(tmp / "model"), "--saes", str(tmp / "saes"), "--task", "fake",
              "--n-select", "14", "--n-val", "6", "--n-test", "10", "--batch-size", "4", "--device", "cpu"]
    cli(["run", *common, "--out", str(tmp / "one")])
    return tmp, common


def _same(a: Path, b: Path, files=FILES):
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_two_processes_equal_one_process(dirs):
    tmp, common = dirs
    p = cli(["run", *common, "--out", str(tmp / "two")], nproc=2)
    _same(tmp / "one", tmp / "two")
    for out, world in (("one", 1), ("two", 2)):
        assert json.loads((tmp / out / "config.json").read_text())["world_size"] == world
        assert f"| world_size | {world} |" in (tmp / out / "report.md").read_text()
        assert not (tmp / out / "IN_PROGRESS").exists()
    assert "rank 0/2: collect batches [0, 2] of 4" in p.stderr and "rank 1/2: collect batches [1, 3] of 4" in p.stderr
    assert "rank 1/2: test batches" in p.stderr
    assert p.stdout.count("# CorrSteer on fake") == 1                 # rank 0 alone reports


def test_two_processes_eval_equals_one_process(dirs):
    tmp, common = dirs
    plan = str(tmp / "one" / "plans" / "A.json")
    args = ["eval", "--plan", plan, *[a for a in common if a not in ("--saes", str(tmp / "saes"))]]
    cli([*args, "--out", str(tmp / "eval1")])
    cli([*args, "--out", str(tmp / "eval2")], nproc=2)
    _same(tmp / "eval1", tmp / "eval2", ("predictions.jsonl",))


def test_kill_9_during_test_then_rerun_equals_uninterrupted(dirs):
    tmp, common = dirs
    args = ["run", *common, "--out", str(tmp / "killed")]
    proc = subprocess.Popen(_cmd(args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = tmp / "killed" / "checkpoints" / "test.safetensors"
    t0 = time.time()
    while not ck.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp / "killed" / "IN_PROGRESS").exists() and not (tmp / "killed" / "report.md").exists()
    p = cli(args)
    assert "test: resuming after batch" in p.stderr and "collect: resuming after batch 4" in p.stderr
    _same(tmp / "one", tmp / "killed")


# ---------------------------------------------------------------------------------------------------------------
# the reduction order, bit for bit, on data where float64 addition order matters
# ---------------------------------------------------------------------------------------------------------------
class ThreadDist:
    """A Dist for `world` threads in one process: gather through a shared list and a barrier."""

    def __init__(self, rank, world, shared, barrier):
        self.rank, self.world, self.shared, self.barrier_ = rank, world, shared, barrier
        self.main, self.active = rank == 0, True

    def gather(self, obj):
        self.barrier_.wait()
        self.shared[self.rank] = obj
        self.barrier_.wait()
        out = list(self.shared)
        self.barrier_.wait()
        return out


def _partials(n, d=64):
    import torch
    g = torch.Generator().manual_seed(0)
    return [dict(features=torch.randn(7, d, generator=g, dtype=torch.float64)
                 * 10.0 ** torch.randint(-8, 8, (7, d), generator=g),
                 scalars=torch.randn(4, generator=g, dtype=torch.float64)) for _ in range(n)]


def _fold_all(results):
    import torch

    from corrsteer.pipeline.collect import Collected, fold_batch
    from corrsteer_kernels import CorrStats
    col = Collected(sae={0: CorrStats(64)}, raw={}, rows=[])
    for parts in results:
        fold_batch(col, {"layer0": parts})
    return torch.cat([col.sae[0].features.flatten(), col.sae[0].scalars])


@pytest.mark.parametrize("world", [2, 3])
def test_rounds_fold_in_batch_order_bit_for_bit(world):
    import threading

    import torch

    from corrsteer.runtime.dist import SINGLE, rounds
    parts = _partials(7)
    want = _fold_all([r for _, got in rounds(7, 0, SINGLE, lambda b: parts[b]) for r in got])
    shared, barrier, out = [None] * world, threading.Barrier(world), {}

    def rank(r):
        d = ThreadDist(r, world, shared, barrier)
        out[r] = _fold_all([res for _, got in rounds(7, 0, d, lambda b: parts[b]) for res in got])

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(out[r], want) for r in range(world))
    # the planted alternative: each rank sums its own batches, then the rank totals are added: not the same bits
    per_rank = [_fold_all(parts[r::world]) for r in range(world)]
    assert not torch.equal(sum(per_rank[1:], per_rank[0]), want)


# ---------------------------------------------------------------------------------------------------------------
# leaving the job: a barrier after a normal end (rank 0 may still be writing), none after an error
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_pg(monkeypatch):
    import torch.distributed as tdist
    calls = []
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(tdist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    return calls


@pytest.mark.parametrize("rc, raises, want", [
    (0, None, ["barrier", "destroy"]),                  # a normal end: wait for every rank, then leave
    (1, None, ["destroy"]),                             # a handler that reports failure
    (None, "run", ["destroy"]),                         # the data gave no result (RunError): exit 1
    (None, "crash", ["destroy"]),                       # any other exception: it propagates, no barrier
])
def test_main_leaves_the_job_with_a_barrier_only_after_success(fake_pg, monkeypatch, rc, raises, want):
    from corrsteer.cli import commands
    from corrsteer.cli import main as cli
    from corrsteer.errors import RunError

    def handler(cfg):
        if raises == "run":
            raise RunError("no result")
        if raises == "crash":
            raise ValueError("boom")
        return rc

    monkeypatch.setattr(cli, "parse_settings", lambda argv, ap: type("Cfg", (), {"command": "run"})())
    monkeypatch.setitem(commands.COMMANDS, "run", (handler, *commands.COMMANDS["run"][1:]))
    if raises == "crash":
        with pytest.raises(ValueError):
            cli.main([])
    else:
        assert cli.main([]) == (1 if raises else rc)
    assert fake_pg == want

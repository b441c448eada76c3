"""The child process of test_sigkill.py: one `corrsteer` command through the real CLI, killed with SIGKILL by itself
at the k-th hit of one point (nothing in corrsteer/ knows about it: the points are patched here, from outside).

    python kill_child.py LOG POINT K -- <corrsteer argv>        (POINT "none": run to the end)
    python kill_child.py --serve MODEL_DIR                       (a fork server of such runs, see serve())

`run` uses FakeTask(30) (tests/fakes.py) in place of the task the command line names; the model and SAEs are the
directories the test saved. LOG gets one line per unit of work, written and flushed before the work starts (so a
killed child's log ends with the unit it died in): "<stage>" per generation batch of `run` (collect, validate,
prefix, test, test-prompting, test-few-shot), "fit" per SAE trained by `train-sae`.

Points: collect / validate / prefix / test (the K-th generation batch of that stage: K >= 2 dies after a checkpoint),
rank (the K-th call of the ranking, after collection finished), report (the K-th top-features plot: after
predictions.jsonl and r_per_layer.png are written, before report.md), checkpoint-write (the K-th checkpoint of
collect, half written), lock (the lock file of --out in place, its temporary file not yet removed), sae-train (the
K-th optimiser step of the second SAE's training, the first SAE already saved), sae-partial (right after the second
SAE's weights are written into its temporary folder, before cfg.json and the rename).
"""
import json
import os
import signal
import sys
from pathlib import Path

import safetensors.torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))          # tests/: fakes, cases

from fakes import FakeTask  # noqa: E402

import corrsteer.cli.commands as commands  # noqa: E402
import corrsteer.method.rank as rank  # noqa: E402
import corrsteer.pipeline.collect as collect  # noqa: E402
import corrsteer.pipeline.runner as runner  # noqa: E402
import corrsteer.report.markdown as markdown  # noqa: E402
import corrsteer.runtime.checkpoint as checkpoint  # noqa: E402
import corrsteer.sae.bank as bank  # noqa: E402
import corrsteer.sae.corpus as corpus  # noqa: E402
import corrsteer.sae.train as train  # noqa: E402
from corrsteer.cli.main import main  # noqa: E402
from corrsteer.runtime.outdir import LOCK  # noqa: E402

GENERATING = ("collect", "validate", "prefix", "test", "test-prompting", "test-few-shot")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Child:
    def __init__(self, log: str, point: str, k: int):
        self.log, self.point, self.k = Path(log), point, k
        self.stage, self.hits, self.fits = None, 0, 0

    def note(self, line: str) -> None:
        with open(self.log, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def hit(self, point: str) -> bool:
        """Count a hit of `point`; True at the K-th hit of the armed point."""
        if point != self.point:
            return False
        self.hits += 1
        return self.hits == self.k

    # --- run ---------------------------------------------------------------------------------------------------
    def generate(self, real, stage=None):
        def fn(*a, **kw):
            where = stage or self.stage
            self.note(where)
            if self.hit(where):
                die()
            return real(*a, **kw)
        return fn

    def staged(self, real):
        """run_plans(lm, task, items, plans, batch_size, desc, ...): remember which stage generates."""
        def fn(*a, **kw):
            self.stage = a[5] if len(a) > 5 else kw["desc"]
            return real(*a, **kw)
        return fn

    def dies_at(self, point: str, real):
        def fn(*a, **kw):
            if self.hit(point):
                die()
            return real(*a, **kw)
        return fn

    def arm_run(self) -> None:
        collect.generate_batch = self.generate(collect.generate_batch, "collect")
        runner.generate_batch = self.generate(runner.generate_batch)
        runner.run_plans = self.staged(runner.run_plans)
        rank.layer_candidates = self.dies_at("rank", rank.layer_candidates)
        markdown.plot_top_features = self.dies_at("report", markdown.plot_top_features)
        commands.load_task = lambda cfg: FakeTask(30)
        checkpoint.os.link = self.linked(os.link)
        safetensors.torch.save_file = self.half_written(safetensors.torch.save_file)

    def half_written(self, real):
        """safetensors' save_file, a kill point for collect's checkpoint: the K-th one dies with half its bytes
        written (wherever the file being written lies)."""
        def fn(tensors, filename, *a, **kw):
            real(tensors, filename, *a, **kw)
            if "collect.safetensors" in str(filename) and self.hit("checkpoint-write"):
                data = Path(filename).read_bytes()
                Path(filename).write_bytes(data[:len(data) // 2])
                die()
        return fn

    def linked(self, real):
        """os.link, the kill point "lock": the K-th link (the lock file of --out taken, its temporary file not yet
        removed)."""
        def fn(src, dst, *a, **kw):
            real(src, dst, *a, **kw)
            if Path(dst).name == LOCK and self.hit("lock"):
                die()
        return fn

    # --- train-sae ---------------------------------------------------------------------------------------------
    def arm_train(self) -> None:
        fit, step, save_file = train.TopKTrainer.fit_normalised, train.TopKTrainer.step, bank.save_file

        def fit_(trainer, *a, **kw):
            self.fits += 1
            self.note("fit")
            return fit(trainer, *a, **kw)

        def step_(trainer, *a, **kw):
            if self.fits == 2 and self.hit("sae-train"):
                die()
            return step(trainer, *a, **kw)

        def save_(tensors, path, *a, **kw):
            save_file(tensors, path, *a, **kw)
            if ".tmp" in Path(path).parent.name and self.fits == 2 and self.hit("sae-partial"):
                die()

        train.TopKTrainer.fit_normalised, train.TopKTrainer.step, bank.save_file = fit_, step_, save_


def run_job(job: dict) -> int:
    """One command in this (forked) process: its own folder, environment, log and output files."""
    os.chdir(job["cwd"])
    os.environ.update(job.get("env", {}))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    child = Child(job["log"], job["point"], job["k"])
    child.arm_run() if job["argv"][0] == "run" else child.arm_train()
    try:
        return main(job["argv"])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def serve(model_dir: str) -> None:
    """Fork server: import everything and load the model once (transformers imports lazily), then for each job (a
    JSON line on stdin) fork a child that runs it, and answer its exit status (os.waitstatus_to_exitcode: -9 for
    SIGKILL) on stdout. Each child still loads the model, SAEs and task from their files; what is shared: imports,
    and the SAE trainer's docstring corpus (corpus.stdlib_docstrings, a pure function of the Python install that
    parses the whole standard library: ~5 s a call), computed here once and handed to each caller as a fresh copy."""
    from corrsteer.model.lm import load_model
    load_model(model_dir)
    docs = corpus.stdlib_docstrings()
    corpus.stdlib_docstrings = lambda: list(docs)
    print(json.dumps(dict(ready=True)), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_job(job)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps(dict(rc=os.waitstatus_to_exitcode(status), pid=pid)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(sys.argv[2])
        sys.exit(0)
    log, point, k, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    child = Child(log, point, int(k))
    child.arm_run() if argv[0] == "run" else child.arm_train()
    sys.exit(main(argv))

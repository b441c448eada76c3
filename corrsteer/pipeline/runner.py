"""The stage runner: what every stage of `corrsteer run` reads (Context) and the one batch loop they all go through.

    run_batches(desc, n, work, fold, ...)     sharded over torchrun ranks (runtime/dist.py), checkpointed after every
                                              round of batches (runtime/checkpoint.py), with a progress bar
    run_plans(lm, task, items, plans, ...)    every item under every steering plan, in shared batches: {name: rows}

Collection (collect.py) and every generating stage (validate, prefix, evaluate, baselines, prompting) use
run_batches; a killed run resumes after the last checkpointed round, under a key of everything the stage's result
depends on: the plan stages' keys cover the model, the items, the scorer and generation settings, and each steering
plan's vectors (which carry the SAE weights, the features, the coefficient rule and the scale).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from corrsteer.config import RunConfig
from corrsteer.method.rank import Candidate, resolve_ranking
from corrsteer.model.generate import generate_batch
from corrsteer.model.lm import LM
from corrsteer.model.steer import SteeringPlan
from corrsteer.report.stats import balanced_accuracy
from corrsteer.runtime.checkpoint import StageCheckpoint, log, plans_key
from corrsteer.runtime.dist import SINGLE, Dist, my_batches, n_batches, rounds
from corrsteer.sae.bank import SAEBank
from corrsteer.tasks.task import Task

CKPT_DIR = "checkpoints"


@dataclass
class Context:
    """What every stage reads: the model, SAEs, task, settings, output directory and this process's rank; the
    ranking is --ranking resolved once for the task (auto: within-class where the task has classes, else pearson)."""
    lm: LM
    bank: SAEBank
    task: Task
    cfg: RunConfig
    out: Path
    sae_source: str = "trained"
    dist: Dist = SINGLE
    model_id: str = ""
    ranking: str = field(init=False)

    def __post_init__(self):
        self.ranking = resolve_ranking(self.cfg.ranking, self.task)

    def ckpt(self, stage: str) -> Path:
        return self.out / CKPT_DIR / f"{stage}.safetensors"

    def measure(self, rows) -> float:
        """What selection compares: balanced accuracy where the task has classes, else accuracy."""
        return balanced_accuracy(rows, classes=self.task.has_classes)

    def plan(self, name: str, picks: list[Candidate], all_positions: bool = False) -> SteeringPlan:
        """A steering plan of SAE features (picks) of this run's bank."""
        return SteeringPlan.from_features(name, self.lm.name, self.sae_source, self.bank, picks, all_positions)

    def generate(self, items, plans: dict, stage: str, task=None) -> dict:
        """run_plans for the stage `stage` of this run (checkpointed under its name): {plan name: rows}."""
        return run_plans(self.lm, task or self.task, items, plans, self.cfg.batch_size, stage, self.cfg.all_positions,
                         dist=self.dist, checkpoint=self.ckpt(stage), model_id=self.model_id)


def prediction_rows(task, items, texts) -> list[dict]:
    """One prediction row per item: its id, prompt, the generated text, the task's reading of it and the score."""
    rows = []
    for it, text in zip(items, texts):
        pred, y = task.score(it, text)
        rows.append(dict(id=it.id, prompt=it.prompt, output=text, pred=pred, gold=it.gold, correct=float(y)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the batch loop
# ---------------------------------------------------------------------------------------------------------------
def run_batches(desc: str, n: int, work: Callable[[int], object], fold: Callable[[object], int], *,
                dist: Dist = SINGLE, ckpt: StageCheckpoint | None = None, restore: Callable[[tuple], int] = None,
                snapshot: Callable[[], tuple] = None, size: Callable[[int], int] = lambda b: 1, unit: str = "batch",
                postfix: Callable[[], dict] | None = None, progress: bool = True) -> None:
    """Batches 0..n-1 of a stage: work(b) computes batch b (rank r of N takes b = r, r + N, ...), fold(result) adds
    it to the stage's state in batch order and returns the progress it makes (size(b) units of `unit`). With a
    checkpoint, rank 0 reads it first and hands it to every rank (restore(found) -> batches already done), and saves
    ckpt.save(done, *snapshot()) after every round."""
    found = dist.broadcast(ckpt.load() if (ckpt and dist.main) else None)
    start = restore(found) if found is not None else 0
    if dist.active:
        mine = my_batches(n, dist, start)
        extra = f" ({sum(size(b) for b in mine)} samples)" if unit == "sample" else ""
        log(f"rank {dist.rank}/{dist.world}: {desc} batches {mine} of {n}{extra}")
    bar = tqdm(total=sum(size(b) for b in range(n)), initial=sum(size(b) for b in range(start)), desc=desc,
               unit=unit, disable=not (progress and dist.main))
    for done, results in rounds(n, start, dist, work):
        for res in results:
            bar.update(fold(res))
        if ckpt and dist.main:
            ckpt.save(done, *snapshot())
        if postfix is not None:
            bar.set_postfix(**postfix())
    bar.close()


# ---------------------------------------------------------------------------------------------------------------
# generation under several plans
# ---------------------------------------------------------------------------------------------------------------
def _plan_batch(lm, task, batch, plans: dict, steer_prompt: bool) -> dict:
    names = list(plans)
    out = generate_batch(lm, [it.prompt for it in batch], task.max_new_tokens, plans=[plans[n] for n in names],
                         steer_prompt=steer_prompt, **task.gen_kwargs)
    C = len(names)
    return {n: prediction_rows(task, batch, out.texts[c::C]) for c, n in enumerate(names)}


def run_plans(lm, task, items, plans: dict, batch_size: int, desc: str, steer_prompt: bool = False,
              dist: Dist = SINGLE, checkpoint=None, model_id: str = "") -> dict:
    """Generate every item under every plan ({name: {HookPoint: vector}}) in shared batches: {name: rows}."""
    names = list(plans)
    per_batch = max(1, batch_size * 4 // len(names))      # keep batch rows (prompts x plans) bounded
    rows = {nm: [] for nm in names}
    ckpt = StageCheckpoint(checkpoint, desc, plans_key(model_id, task, items, plans, per_batch, steer_prompt)) \
        if checkpoint else None

    def restore(found) -> int:
        if set(found[1]) != set(names):
            return 0
        rows.update(found[1])
        return found[0]

    def work(b):
        return _plan_batch(lm, task, items[b * per_batch:(b + 1) * per_batch], plans, steer_prompt)

    def fold(res) -> int:
        for nm in names:
            rows[nm].extend(res[nm])
        return 1

    run_batches(desc, n_batches(len(items), per_batch), work, fold, dist=dist, ckpt=ckpt, restore=restore,
                snapshot=lambda: (rows,))
    return rows

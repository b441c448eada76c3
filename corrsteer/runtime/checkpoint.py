"""Checkpoints and atomic outputs: what lets a run be killed at any point and rerun into the same result.

Every output file is written by corrsteer.files (`atomic_write_*`: a temporary file beside it, flushed to disk and
renamed over the target): a reader sees the old file or the new one, never half of one.

A stage checkpoint (`StageCheckpoint`) is one safetensors file: tensors (the stage's running statistics, possibly none)
and metadata "key" (a JSON object {component: digest} of everything the stage's result depends on), "done" (finished
batches) and "state" (JSON: rows generated so far). On load:
  - no file: the stage starts at batch 0;
  - a file that cannot be read (truncated, not safetensors, bad JSON): one line names it, it is set aside as
    <file>.corrupt and the stage starts over;
  - a file written under another key: one line names the components that changed and the stage starts fresh.

The in-progress marker (`IN_PROGRESS` in the output directory) exists from the moment a run starts writing into a
directory until its last output is in place: a directory holding it is incomplete, whatever else it holds.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from corrsteer.files import (  # noqa: F401  (re-exported: the writers every stage uses)
    alive,
    atomic_create_text,
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_text,
    log,
    remove_stale_tmp,
)
from corrsteer.settings import SettingsError, one_line

MARKER = "IN_PROGRESS"


# ---------------------------------------------------------------------------------------------------------------
# digests: what a result depends on
# ---------------------------------------------------------------------------------------------------------------
def digest(obj) -> str:
    """A short stable digest of JSON-able data (keys sorted)."""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def tensor_digest(*tensors) -> str:
    """Digest of tensors' dtypes, shapes and exact bytes (None allowed)."""
    h = hashlib.blake2b(digest_size=12)
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_identity(lm, sample: int = 4096) -> str:
    """The model's name, source, dtype and parameter shapes, and a strided sample of every parameter's values (the
    full weights are not hashed: a different checkpoint of the same architecture changes the sample)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([lm.name, str(getattr(lm.model.config, "_name_or_path", ""))]).encode())
    for name, p in lm.model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        h.update(name.encode())
        h.update(tensor_digest(flat[::step][:sample]).encode())
    return h.hexdigest()


def sae_identity(entry) -> str:
    """An SAE's configuration (width, activation, k, hook) and a digest of all its weights."""
    sae = entry.sae
    conf = [entry.hook.hook_name, sae.d_in, sae.d_sae, sae.activation, getattr(sae, "k", None)]
    return digest([conf, tensor_digest(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, getattr(sae, "threshold", None))])


def items_identity(items) -> str:
    """Every item's id, prompt and gold answer, in order."""
    return digest([[it.id, it.prompt, str(it.gold), it.choices, it.labels]
                   for it in items])


def task_identity(task) -> str:
    return digest([task.name, task.kind, task.max_new_tokens, task.scorer])


def vectors_identity(plans: dict) -> dict:
    """{plan name: digest of its hook vectors}: the vectors carry the SAE weights, features, coefficient rule and
    scale they were built from."""
    return {name: digest(sorted((hp.hook_name, tensor_digest(v)) for hp, v in vecs.items()))
            for name, vecs in plans.items()}


def plans_key(model_id: str, task, items, plans: dict, per_batch: int, steer_prompt: bool) -> dict:
    """Everything a generating stage's rows depend on: the model, the items, the scorer and generation settings,
    the batch size, and each steering plan's vectors."""
    return dict(model=model_id, items=items_identity(items), task=task_identity(task), batch_size=per_batch,
                all_positions=steer_prompt, variants=sorted(plans), **{f"plan {n}": v for n, v in
                                                                       vectors_identity(plans).items()})


# ---------------------------------------------------------------------------------------------------------------
# stage checkpoints
# ---------------------------------------------------------------------------------------------------------------
class StageCheckpoint:
    """One stage's checkpoint file under `key` (a dict of digests). Only the writing rank calls save()."""

    def __init__(self, path, stage: str, key: dict):
        self.path, self.stage, self.key = Path(path), stage, {k: str(v) for k, v in key.items()}

    def load(self):
        """(done, state, tensors) of a checkpoint written under this key, else None (after saying why)."""
        if not self.path.exists():
            return None
        try:
            meta, tensors = self._read()
            old = json.loads(meta["key"])
            done, state = int(meta["done"]), json.loads(meta["state"])
        except Exception as e:          # whatever a damaged file raises: it is set aside, never trusted
            self.set_aside(e)
            return None
        changed = sorted(k for k in set(old) | set(self.key) if old.get(k) != self.key.get(k))
        if changed:
            log(f"{self.stage}: {', '.join(changed)} changed since {self.path} was written: starting {self.stage} "
                "fresh")
            return None
        log(f"{self.stage}: resuming after batch {done} from {self.path}")
        return done, state, tensors

    def _read(self):
        from safetensors import safe_open

        with safe_open(str(self.path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return meta, tensors

    def set_aside(self, err: Exception) -> None:
        bad = self.path.with_name(self.path.name + ".corrupt")
        os.replace(self.path, bad)
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        log(f"checkpoint {self.path} is unreadable ({type(err).__name__}: {reason}): moved to {bad.name}; "
            f"{self.stage} starts over")

    def save(self, done: int, state, tensors: dict | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(key=json.dumps(self.key, sort_keys=True), done=str(done), state=json.dumps(state),
                    stage=self.stage)
        atomic_save_tensors(self.path, tensors or {}, meta)


# ---------------------------------------------------------------------------------------------------------------
# the output folder: writable, and marked in progress until its last output is in place
# ---------------------------------------------------------------------------------------------------------------
def writable_out(out: str) -> Path:
    """--out must be a directory this process can create and write (SettingsError otherwise)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SettingsError(f"--out {out} is a file, expected a directory you can create and write to")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".corrsteer-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SettingsError(f"--out {out} is not writable ({e.strerror or one_line(e)}), expected a directory "
                            "you can create and write to") from None
    return path


def mark_in_progress(out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, f"`corrsteer {command}` is writing this directory (or was killed while it did): "
                                    "its outputs are incomplete until this file is gone. Rerun the same command to "
                                    "finish it.\n")


def mark_done(out: Path) -> None:
    (out / MARKER).unlink(missing_ok=True)

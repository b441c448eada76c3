"""Data parallelism over batches with torchrun: `torchrun --nproc_per_node N -m corrsteer run ...`.

The items keep the batch partition of a 1-process run; rank r of N generates batches r, r + N, r + 2N, ... . Work
proceeds in rounds of N consecutive batches: each rank does its batch of the round (the last round may leave some
ranks idle), then every rank gathers the round's results in rank order, which is batch order, and folds them in.
So every rank ends each round holding exactly what one process holds after the same batches — the same rows in the
same order and the same statistics, summed in the same order (see collect.py) — and checkpoints (written by rank 0
only) do not depend on the number of processes.

Backends: gloo on CPU, NCCL on CUDA (each rank on cuda:LOCAL_RANK). Objects travel with all_gather_object.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; the default is a single process."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's obj on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist
            dist.barrier()


SINGLE = Dist()


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank in a torchrun job (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def init(device: torch.device) -> Dist:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), if any."""
    world = env_world()
    if world <= 1:
        return SINGLE
    import torch.distributed as dist
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return Dist(rank=rank, world=world, local_rank=local)


def rank_device(device: torch.device, d: Dist) -> torch.device:
    """Each rank on its own GPU (cuda:LOCAL_RANK) when the job runs on CUDA; the CPU stays the CPU."""
    return torch.device("cuda", d.local_rank) if d.active and device.type == "cuda" else device


def shutdown(ok: bool = True) -> None:
    """Leave the job. After a normal end every rank first waits for the others (rank 0 may still be writing the
    report): a rank that tears its gloo pairs down while a peer is still busy can abort at exit ("terminate called
    without an active exception"). After an error there is no barrier — a peer may never reach it — torchrun stops
    the others once this rank exits non-zero."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def n_batches(n_items: int, batch_size: int) -> int:
    return -(-n_items // batch_size)


def my_batches(n: int, d: Dist, start: int = 0) -> list[int]:
    """The batches (of n, from `start`) this rank generates."""
    return list(range(start + d.rank, n, d.world))


def rounds(n: int, start: int, d: Dist, work: Callable[[int], object]) -> Iterator[tuple[int, list]]:
    """For each round from batch `start`: (batches done after it, [results of its batches in batch order]).
    `work(b)` computes batch b on this rank; every rank receives every result of the round."""
    for first in range(start, n, d.world):
        b = first + d.rank
        mine = work(b) if b < n else None
        got = d.gather(mine)
        yield min(first + d.world, n), got[:n - first]

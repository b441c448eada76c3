"""SteeringPlan: which SAE features to add where, with what coefficients — saved as JSON, applied with hooks.

    plan = SteeringPlan.load("plan.json")
    with plan.apply(lm):                       # adds coefficient * W_dec[feature] at the plan's hook points
        lm.model.generate(**enc, max_new_tokens=32, do_sample=False)

By default the vectors are added at generation positions only: in a forward over several positions (the prompt
prefill) only the last one, the last prompt token, is steered; every decode step is. all_positions=True steers the
prompt too. The plan stores each entry's vector (coefficient * W_dec row, summed per hook) next to its features, so
it applies without the SAE bank and can be checked against it.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import torch

from corrsteer.files import atomic_write_text
from corrsteer.model.hooks import HookPoint, hooked
from corrsteer.model.plan_check import PlanProblem, check_plan_dict
from corrsteer.settings import SettingsError, one_line
from corrsteer_kernels import steer_add_, steering_vectors


class FeaturePick(Protocol):
    """What a plan is built from: one SAE feature of one layer and its coefficient (method.rank.Candidate)."""
    layer: int
    feature: int
    coef: float
    r: float


@dataclass
class PlanEntry:
    layer: int
    hook: str              # sae-lens hook name, e.g. blocks.12.hook_resid_post
    features: list[int]
    coefficients: list[float]
    r: list[float] = field(default_factory=list)


@dataclass
class SteeringPlan:
    name: str
    model: str
    sae_source: str
    entries: list[PlanEntry]
    vectors: dict = field(default_factory=dict)      # hook name -> list[float] (filled by with_vectors)
    all_positions: bool = False
    split: dict = field(default_factory=dict)        # the run's split (tasks.splits.split_record); {} if unknown

    @classmethod
    def from_features(cls, name, model, sae_source, bank, picks: Sequence[FeaturePick],
                      all_positions=False) -> "SteeringPlan":
        """picks: objects with .layer, .feature, .coef and .r (method.rank.Candidate); features at the same layer
        are summed."""
        by_layer = {}
        for p in picks:
            e = by_layer.setdefault(p.layer, PlanEntry(p.layer, bank[p.layer].hook.hook_name, [], []))
            e.features.append(int(p.feature))
            e.coefficients.append(float(p.coef))
            e.r.append(float(p.r))
        plan = cls(name, model, sae_source, list(by_layer.values()), all_positions=all_positions)
        return plan.with_vectors(bank)

    def with_vectors(self, bank) -> "SteeringPlan":
        for e in self.entries:
            v = steering_vectors(bank[e.layer].sae, [e.features], [e.coefficients])[0]
            self.vectors[e.hook] = v.tolist()
        return self

    def hook_vectors(self, device=None) -> dict:
        """{HookPoint: fp32 vector [d]} on `device` (default the CPU)."""
        missing = [e.hook for e in self.entries if e.hook not in self.vectors]
        if missing:
            raise ValueError(f"plan {self.name!r} has no vectors for {missing}")
        return {HookPoint.parse(h): torch.tensor(v, dtype=torch.float32, device=device)
                for h, v in self.vectors.items()}

    # ---- persistence ----
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SteeringPlan":
        """The plan a JSON object holds, every field checked (plan_check): PlanProblem for a wrong value,
        ValueError for what is not a plan at all."""
        if not isinstance(d, dict):
            raise ValueError(f"not a steering plan: a JSON {type(d).__name__}, not an object")
        try:
            check_plan_dict(d)
            entries = [PlanEntry(**e) for e in d["entries"]]
            return cls(d["name"], d["model"], d["sae_source"], entries, dict(d.get("vectors", {})),
                       d.get("all_positions", False), dict(d.get("split") or {}))
        except KeyError as e:
            raise ValueError(f"not a steering plan: no field {e}") from e
        except TypeError as e:
            raise ValueError(f"not a steering plan: {e}") from e

    def save(self, path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path) -> "SteeringPlan":
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ---- application ----
    @contextmanager
    def apply(self, lm, scale: float = 1.0):
        """Context manager: steer lm (an LM or anything with .layers) while the block runs. The vectors are checked
        and moved to the layers' device once, here; the hooks add them unchecked (no host sync per forward)."""
        param = next(iter(lm.layers.parameters()), None)
        device = param.device if param is not None else None
        vecs = {hp: (v * scale)[None] for hp, v in self.hook_vectors(device).items()}
        width = getattr(lm, "d_model", None)
        for hp, v in vecs.items():
            if width is not None and v.shape[-1] != width:
                raise ValueError(f"plan {self.name!r}: the vector at {hp.hook_name} is {v.shape[-1]} wide but the "
                                 f"model is {width} wide")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"plan {self.name!r}: the vector at {hp.hook_name} (times {scale}) is not finite")
        all_pos = self.all_positions

        def adder(v):
            def fn(h):
                if all_pos or h.shape[1] == 1:
                    steer_add_(h, v, check=False)
                else:              # a prefill: steer its last position (the last prompt token) only
                    pos = torch.zeros(h.shape[:2], dtype=torch.bool, device=h.device)
                    pos[:, -1] = True
                    steer_add_(h, v, positions=pos, check=False)
                return None
            return fn

        with hooked(lm.layers, {hp: adder(v) for hp, v in vecs.items()}):
            yield self


# ---------------------------------------------------------------------------------------------------------------
# a plan named on the command line: loaded and checked against the model, with one-line usage errors
# ---------------------------------------------------------------------------------------------------------------
def load_plan(path: str) -> SteeringPlan:
    """A steering plan loaded from --plan; a missing or corrupt file is a usage error (SettingsError)."""
    try:
        return SteeringPlan.load(path)
    except FileNotFoundError:
        raise SettingsError(f"--plan {path}: no such file, expected a plan.json written by corrsteer run or "
                            "select") from None
    except PlanProblem as e:
        raise SettingsError(f"--plan {path}: {e}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise SettingsError(f"--plan {path} is not a steering plan ({one_line(e)}), expected a plan.json "
                            "written by corrsteer run or select") from None


def check_plan_fits(plan: SteeringPlan, path: str, lm) -> None:
    """Every layer the plan steers exists in the model, and every vector is the model's width."""
    for layer in [e.layer for e in plan.entries] + [HookPoint.parse(h).layer for h in plan.vectors]:
        if layer >= lm.n_layers or layer < 0:
            raise SettingsError(f"--plan {path} steers layer {layer}, expected a layer of {lm.name} "
                                f"(0..{lm.n_layers - 1})")
    for hook, v in plan.vectors.items():
        if len(v) != lm.d_model:
            raise SettingsError(f"--plan {path}: the vector at {hook} is {len(v)} wide, expected {lm.name}'s "
                                f"width {lm.d_model}")

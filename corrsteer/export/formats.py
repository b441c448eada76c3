"""Format name -> writer: `export_plan(plan, "gguf-control-vector", "plan.gguf")` is `corrsteer export`.

Each writer is `write(plan, out, allow_prompt_positions) -> [paths written]` and raises SettingsError (one line)
for a plan its runtime cannot express.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from corrsteer.export import gguf, lm_eval, neuronpedia, vllm
from corrsteer.files import DiskFull
from corrsteer.model.steer import SteeringPlan
from corrsteer.settings import SettingsError, one_line, registry


@dataclass(frozen=True)
class Format:
    name: str
    write: Callable[..., list[Path]]
    what: str
    needs: str          # the runtime version the file is for, said when it is written


FORMATS: dict[str, Format] = registry((
    Format(gguf.FORMAT, gguf.write, "llama.cpp control vector (llama-cli --control-vector FILE.gguf)", "llama.cpp"),
    Format(lm_eval.FORMAT, lm_eval.write, "lm-evaluation-harness steered model (steer_path=FILE.pt)",
           f"lm-eval >= {lm_eval.MIN_VERSION}"),
    Format(vllm.FORMAT, vllm.write, "EasySteer SteeringSpec (FILE.json + FILE.vectors.gguf)",
           "EasySteer's v2 steering API (SteeringSpec)"),
    Format(neuronpedia.FORMAT, neuronpedia.write, "Neuronpedia steering features or custom vectors (FILE.json)",
           "neuronpedia.org/api/steer or /api/vector/new"),
), lambda f: f.name, "export format")


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise SettingsError(f"--format {name}: unknown export format, expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def export_plan(plan: SteeringPlan, fmt: str, out, allow_prompt_positions: bool = False) -> list[Path]:
    """Write `plan` in format `fmt` to `out`; returns the files written."""
    writer = get_format(fmt).write
    try:
        return writer(plan, out, allow_prompt_positions=allow_prompt_positions)
    except OSError as e:
        if isinstance(e, DiskFull):         # its own line: the old file is intact
            raise
        raise SettingsError(f"--out {out} could not be written ({e.strerror or one_line(e)}), expected a file "
                            "path you can write to") from None

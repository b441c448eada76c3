"""report.md and its plots as a pure function of a run's outputs: `corrsteer report DIR`, and the last step of
`corrsteer run` (which writes report_inputs.json, then renders from the files, so the two cannot differ).

Read from DIR: config.json (the bootstrap's seed), predictions.jsonl (every row of every variant) and
report_inputs.json (what the run knew that no other file holds: the title, the settings table, whether the task has
classes, the ranked top features with their scores, the prompting templates and extra lines such as feature links).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from corrsteer.files import atomic_write_text
from corrsteer.report.contrasts import BASELINE, PROMPTS, STEERED_PROMPT, P
from corrsteer.report.markdown import Report, write_report
from corrsteer.report.plots import feature_score
from corrsteer.report.stats import Comparison, Evaluation, compare, evaluate
from corrsteer.settings import SettingsError

INPUTS = "report_inputs.json"
PREDICTIONS = "predictions.jsonl"
CONFIG = "config.json"
# what the top-features table calls each ranking's score
SCORE_NAMES = {"pearson": "r", "within-class": "within-class r", "mi": "mutual information",
               "fisher": "Fisher ratio", "caa": "mean difference"}


class ReportError(SettingsError):
    """A run directory that cannot be rendered; one line naming the file and what was expected."""


@dataclass
class Feature:
    """One ranked feature as report_inputs.json holds it (score None: the run did not record it)."""
    feature: int
    r: float
    score: float | None
    freq: float
    coef: float


def feature_dict(c) -> dict:
    """A ranked candidate (method.rank.Candidate or Feature) as report_inputs.json stores it."""
    return dict(feature=int(c.feature), r=float(c.r), score=None if c.score is None else float(c.score),
                freq=float(c.freq), coef=float(c.coef))


def write_inputs(out_dir, *, title: str, settings: dict, classes: bool, ranking: str, top_features: dict,
                 prompts: dict | None = None, extra=()) -> Path:
    """report_inputs.json: {title, settings, classes, ranking, top_features: {layer: [feature_dict]}, prompts,
    extra}."""
    data = dict(title=title, settings=settings, classes=bool(classes), ranking=ranking,
                top_features={str(L): [feature_dict(c) for c in cs] for L, cs in top_features.items()},
                prompts=dict(prompts or {}), extra=list(extra or []))
    return atomic_write_text(Path(out_dir) / INPUTS, json.dumps(data, indent=1) + "\n")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: not found, expected the output of a finished `corrsteer run`") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not JSON ({e.msg} at line {e.lineno}), expected the run's own file") from None


def read_predictions(path: Path) -> dict[str, list[dict]]:
    """{variant: rows} in the file's order."""
    if not path.exists():
        raise ReportError(f"{path}: not found, expected the output of a finished `corrsteer run`")
    out: dict[str, list[dict]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            out.setdefault(row.pop("variant"), []).append(row)
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise ReportError(f"{path}:{n}: expected a JSON object with a 'variant'") from None
    if BASELINE not in out:
        raise ReportError(f"{path}: no '{BASELINE}' rows, expected the unsteered model's answers")
    return out


def groups(names) -> tuple[list[str], list[str], list[str]]:
    """(steering, comparison methods and controls, prompting rows) of a run's variant names: the first two in the
    run's order, the prompting rows as prompting, few-shot, prompting+P."""
    prompting = [n for n in (*PROMPTS, STEERED_PROMPT) if n in names]
    steering = [n for n in names if n.startswith("CorrSteer")]
    other = [n for n in names if n not in (BASELINE, *prompting, *steering)]
    return steering, other, prompting


def _score_name(ranking: str | None, top: dict) -> tuple[str, list[str]]:
    """What the top features are shown by: the ranking's score, or r (with a note) where the run did not record
    the score of a ranking that is not Pearson's."""
    name = SCORE_NAMES.get(ranking or "pearson", "score")
    if name == "r" or all(f.score is not None for fs in top.values() for f in fs):
        return name, []
    return "r", [f"This run recorded each feature's Pearson r only, not the {name} it was ranked by."]


@dataclass
class Rendered:
    """What a report shows, as numbers: each row against the unsteered baseline (the variants, the no-SAE baselines
    and controls, the prompting rows), the bootstrap Evaluation of every row and each row's McNemar p against P."""
    comparisons: list[Comparison]
    baselines: list[Comparison]
    prompting: list[Comparison]
    evaluation: Evaluation
    vs_p: dict[str, float]


def render(run_dir, out_dir=None, plots: bool = True) -> Rendered:
    """Write report.md (and, with plots, the PNGs) of the run in run_dir into out_dir (default: run_dir); returns
    the comparisons, the Evaluation and the McNemar p-values against P."""
    run = Path(run_dir)
    cfg, inp = _load_json(run / CONFIG), _load_json(run / INPUTS)
    rows = read_predictions(run / PREDICTIONS)
    base = rows[BASELINE]
    steering, other, prompting = groups(list(rows))
    comps = [compare(n, base, rows[n]) for n in steering]
    base_comps = [compare(n, base, rows[n]) for n in other]
    prompt_comps = [compare(n, base, rows[n]) for n in prompting]
    ev = evaluate(rows, inp["classes"], seed=int(cfg.get("settings", {}).get("seed", 0)))
    mc_vs_p = {n: compare(n, rows[P], rows[n]).p_value for n in rows if n not in (BASELINE, P)} if P in rows else {}
    top = {int(L): [Feature(**f) for f in fs] for L, fs in inp["top_features"].items()}
    score_name, note = _score_name(inp.get("ranking"), top)
    layer_r = {L: feature_score(fs[0]) for L, fs in top.items() if fs}
    write_report(out_dir or run, Report(title=inp["title"], comparisons=comps, top_features=top, layer_r=layer_r,
                 settings=inp["settings"], baselines=base_comps, outputs=rows, extra=note + inp.get("extra", []),
                 evaluation=ev, prompting=prompt_comps, vs_p=mc_vs_p, prompts=inp.get("prompts") or None,
                 score_name=score_name), plots=plots)
    return Rendered(comps, base_comps, prompt_comps, ev, mc_vs_p)

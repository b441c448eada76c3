"""`corrsteer report DIR`: report.md as a pure function of a run's outputs. Every committed run under
bench/results/runs/ re-renders to its committed report.md byte for byte (the PNGs are not compared: matplotlib's
rendering, fonts included, differs between versions; plots.py's own test checks they are the same bytes for the
same inputs on one machine)."""
import json
import shutil
from pathlib import Path

import pytest

from corrsteer.cli.main import main
from corrsteer.report.render import INPUTS, ReportError, read_predictions, render

ROOT = Path(__file__).resolve().parents[2] / "bench" / "results" / "runs"
RUNS = sorted(p.parent for p in ROOT.glob(f"**/{INPUTS}"))      # the current runs and archive-<date>/<run>


def test_the_committed_runs_are_there():
    assert len(RUNS) >= 8


@pytest.mark.parametrize("run", RUNS, ids=[str(r.relative_to(ROOT)) for r in RUNS])
def test_committed_report_equals_its_rerender(run, tmp_path):
    render(run, tmp_path, plots=False)
    assert (tmp_path / "report.md").read_bytes() == (run / "report.md").read_bytes(), \
        f"{run.name}: report.md differs from `corrsteer report` of its outputs; re-render it"


def test_cli_report_rewrites_report_and_plots(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(RUNS[0], run)
    (run / "report.md").write_text("stale")
    (run / "top_features.png").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").read_bytes() == (RUNS[0] / "report.md").read_bytes()
    assert (run / "top_features.png").read_bytes()[:4] == b"\x89PNG"
    assert "rendered from" in capsys.readouterr().out


def test_a_directory_without_outputs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].endswith("config.json: not found, expected the output of a finished "
                                                  "`corrsteer run`")


def test_bad_predictions_are_one_line_errors(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text('{"variant": "baseline", "id": 1}\nnot json\n')
    with pytest.raises(ReportError, match=r"predictions.jsonl:2: expected a JSON object with a 'variant'"):
        read_predictions(p)
    p.write_text(json.dumps({"variant": "CorrSteer-P", "id": 1}) + "\n")
    with pytest.raises(ReportError, match="no 'baseline' rows"):
        read_predictions(p)


def test_runs_table_follows_the_intervals():
    from bench.runs_table import row
    now = {r.name: r for r in RUNS if r.parent == ROOT}                          # the runs of 2026-12-08
    assert row(now["sentiment"]).endswith("| [27, 20, 7] | not resolved vs constant; worse than prompt, "
                                          "mean-difference |")
    assert row(now["arithmetic"]).endswith("| P changed no answer |")
    by = {r.name: r for r in RUNS if r.parent.name == "archive-2026-12-07"}      # the runs of 2026-12-07
    assert row(by["sentiment"]).endswith("| [17, 1, 2, 4, 10] | gain |")
    capitals = row(by["capitals"])
    assert "| accuracy |" in capitals and "| — |" in capitals                # free-form: no constant answer
    assert capitals.endswith("| not resolved vs unsteered, random-feature, prompt, mean-difference |")
    assert row(by["refusal"]).endswith("| P changed no answer |")

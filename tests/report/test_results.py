"""The Results tables: plain columns without an evaluation, the full ones (balanced accuracy, recall, bootstrap
intervals, McNemar vs P) with it, and the unsteered and constant-answer rows first."""
from fakes import class_rows

from corrsteer.report.results import FULL_HEADER, PLAIN_HEADER, fmt_diff_ci, fmt_points_ci, results_table
from corrsteer.report.stats import Interval, compare, evaluate


def test_interval_formats():
    assert fmt_points_ci(Interval(0.125, 0.05, 0.2)) == "+12.5 [+5.0, +20.0]"
    assert fmt_diff_ci(Interval(-0.1, -0.2, 0.0)) == "-0.100 [-0.200, +0.000]"


def test_plain_and_full_tables():
    rows = {"baseline": class_rows({"p": {"p": 6, "n": 4}, "n": {"n": 2, "p": 8}}),
            "CorrSteer-P": class_rows({"p": {"p": 8, "n": 2}, "n": {"n": 7, "p": 3}}, seed=1)}
    comps = [compare("CorrSteer-P", rows["baseline"], rows["CorrSteer-P"])]
    plain = results_table(comps, None)
    assert plain[0] == "| " + " | ".join(PLAIN_HEADER) + " |" and len(plain) == 3
    ev = evaluate(rows, n_boot=200)
    full = results_table(comps, ev, {"CorrSteer-P": 0.5}, references=True)
    assert full[0] == "| " + " | ".join(FULL_HEADER) + " |" and len(full) == 5
    assert full[2].startswith("| unsteered (baseline) | 40.0% |") and full[3].startswith("| constant answer ")
    assert "| 0.750 |" in full[4] and "n 0.70 · p 0.80" in full[4]

"""bench/gpu.sh's fail-soft parts: the merged JSON rewritten after every step keeps earlier figures and the failed
step's error; a worker child that crashes or hangs loses only its entry (bench/isolate.py); the smoke step switches
off exactly the kernel families made to fail (CORRSTEER_FAULT)."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from bench import merge_results
from bench.isolate import run_entries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META = dict(device="cpu", device_kind="cpu", date="2026-12-07")


def _merge(tmp_path, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["merge_results", str(tmp_path), "--quiet", "--step-logs", str(tmp_path), *argv])
    merge_results.main()
    return json.load(open(tmp_path / "gpu-cpu-2026-12-07.json"))


def test_merge_after_each_step_keeps_earlier_figures_and_the_failed_steps_error(tmp_path, monkeypatch):
    (tmp_path / "smoke-cpu-2026-12-07.json").write_text(json.dumps(dict(meta=META, families={
        "split": dict(ok=False, error="InjectedFault: x"), "packed": dict(ok=True)})))
    (tmp_path / "k1-cpu-2026-12-07.json").write_text(json.dumps(dict(meta=META, layout="packed", summary=dict(
        worst_fused_over_gemm=1.1, all_pass=True, errors=0, strategies={"split": "skipped"}), gemm_ceiling={})))
    (tmp_path / ".step-k1.txt").write_text("\n".join(f"line {i}" for i in range(40)))
    got = _merge(tmp_path, monkeypatch, "--steps", "smoke=0", "k1=124")
    assert got["summary"]["kernels_switched_off"] == {"split": "InjectedFault: x"}
    assert got["summary"]["k1_worst_fused_over_gemm"] == 1.1
    assert got["step_errors"] == {"k1": dict(exit="124", timed_out=True,
                                             tail=[f"line {i}" for i in range(15, 40)])}
    (tmp_path / "e2-cpu-2026-12-07.json").write_text("{\"meta\": {")          # a file cut off mid-write
    got = _merge(tmp_path, monkeypatch, "--steps", "smoke=0", "k1=124", "e2=1")
    assert got["k1"]["layout"] == "packed" and "unreadable" in got["e2"]["error"]
    assert set(got["steps"]) == {"smoke", "k1", "e2"}


CHILD = textwrap.dedent("""
    import os, sys, time
    from bench.isolate import announce, report
    for i in range(int(sys.argv[1]), 5):
        announce(i)
        if i == 1:
            os.abort()
        if i == 3:
            time.sleep(60)
        print("noise", flush=True)
        report(i, dict(result=i * 10))
""")


def test_run_entries_loses_only_the_crashed_and_the_hung_entry():
    got = {}
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    never = run_entries(lambda i: [sys.executable, "-c", CHILD, str(i)], 5, got.__setitem__,
                        deadline=time.monotonic() + 60, entry_timeout=3, env=env)
    assert never == [] and time.monotonic() - t0 < 30
    assert {i: v.get("result") for i, v in got.items()} == {0: 0, 1: None, 2: 20, 3: None, 4: 40}
    assert got[1]["error"] == "worker killed by SIGABRT during this entry"
    assert got[3]["error"] == "worker timed out after 3s during this entry"


def test_run_entries_stops_at_the_deadline():
    got = {}
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    hang = "import sys, time; from bench.isolate import announce; announce(int(sys.argv[1])); time.sleep(60)"
    never = run_entries(lambda i: [sys.executable, "-c", hang, str(i)], 5, got.__setitem__,
                        deadline=time.monotonic() + 4, entry_timeout=30, env=env)
    assert got == {0: dict(error="worker deadline during this entry")}
    assert never == [1, 2, 3, 4]


@pytest.mark.slow
def test_smoke_switches_off_exactly_the_failing_families(tmp_path):
    env = dict(os.environ, CORRSTEER_FAULT="combine:abort,split:raise",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "kernels"), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", "bench.smoke", "--device", "cpu", "--families", "combine,split,packed",
                        "--out-dir", str(tmp_path), "--disabled-file", str(tmp_path / "off"), "--deadline", "120"],
                       env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert (tmp_path / "off").read_text() == "combine,split"
    fams = json.load(open(next(tmp_path.glob("smoke-cpu-*.json"))))["families"]
    assert fams["packed"]["ok"] and fams["split"]["ok"] is False and fams["combine"]["ok"] is False
    assert "injected compile failure of the split kernel" in fams["split"]["error"]
    assert fams["combine"]["error"] == "the child died: killed by SIGABRT"

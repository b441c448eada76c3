"""The run's profile (corrsteer.profile): stages nest, steps follow one another, each stage's peak RSS covers what it
allocated (also a spike between two boundaries, seen by the sampler) and not what an earlier stage allocated."""
from __future__ import annotations

import json
import time

from corrsteer.profile import Profiler, brief, machine
from corrsteer.settings import add_to_config

MB = 2**20


def _touch(n_mb: int) -> bytearray:
    buf = bytearray(n_mb * MB)
    for i in range(0, len(buf), 4096):      # resident, page by page
        buf[i] = 1
    return buf


def test_steps_and_nested_stages_form_a_tree():
    p = Profiler()
    p.step("model")
    p.step("SAEs")
    p.enter("SAE training")
    p.step("answers and text")
    p.step("layer 0")
    p.end_step()
    p.exit()
    p.step("collect")
    time.sleep(0.02)
    s = p.summary()
    names = [r["name"] for r in s["stages"]]
    assert names == ["model", "SAEs", "collect"]
    assert s["stages"][-1]["open"] and s["stages"][-1]["wall_s"] >= 0.02
    training = s["stages"][1]["stages"][0]
    assert training["name"] == "SAE training"
    assert [r["name"] for r in training["stages"]] == ["answers and text", "layer 0"]
    for r in (s, *s["stages"]):
        assert r["wall_s"] >= 0 and r["cpu_s"] >= 0 and r["peak_rss_mb"] > 0


def test_a_stage_peak_covers_its_allocation_and_not_an_earlier_one():
    p = Profiler()
    p.step("big")
    buf = _touch(120)
    p.step("between")
    del buf
    p.step("small")
    small_buf = _touch(8)
    p.end_step()
    s = p.summary()
    big, _, small = s["stages"]
    assert big["peak_rss_mb"] >= 120 + small["peak_rss_mb"] - 20
    assert s["peak_rss_mb"] >= big["peak_rss_mb"]
    assert s["process_peak_rss_mb"] >= big["peak_rss_mb"] - 2          # the kernel's VmHWM lags a little
    assert small["peak_rss_mb"] < big["peak_rss_mb"] - 60
    assert small_buf


def test_the_sampler_sees_a_peak_inside_a_stage():
    p = Profiler()
    p.step("spike")
    rss0 = p.stack[-1].peak_kb / 1024
    buf = _touch(150)
    time.sleep(0.2)                        # ten sampling periods
    del buf
    p.end_step()
    assert p.summary()["stages"][0]["peak_rss_mb"] >= rss0 + 140


def test_machine_and_brief():
    m = machine()
    assert m["logical_cpus"] >= 1 and isinstance(m["cpu"], str) and isinstance(m["cpu_flags"], list)
    assert brief(dict(wall_s=725.4, cpu_s=1400.2, peak_rss_mb=2467.8)) == \
        "wall 12 min 5 s, CPU 1400 s, peak RSS 2.41 GB"
    assert brief(dict(wall_s=9.6, cpu_s=3, peak_rss_mb=512)) == "wall 10 s, CPU 3 s, peak RSS 0.50 GB"


def test_add_to_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(command="run", settings={"n_test": 3})))
    add_to_config(tmp_path, profile=dict(wall_s=1.0))
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc == dict(command="run", settings={"n_test": 3}, profile=dict(wall_s=1.0))
    add_to_config(tmp_path / "none", profile={})        # no config.json there: nothing written
    assert not (tmp_path / "none").exists()


def test_start_begins_afresh():
    from corrsteer import profile
    profile.start()
    profile.step("a")
    profile.start()
    profile.step("b")
    profile.end_step()
    assert [r["name"] for r in profile.summary()["stages"]] == ["b"]

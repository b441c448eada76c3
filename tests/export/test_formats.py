"""The format registry and `corrsteer export` end to end: every format from one plan, unknown formats and
duplicate names refused."""
import pytest
from export_plans import feature_plan

from corrsteer.cli import main as cli
from corrsteer.export.formats import FORMATS, Format
from corrsteer.settings import registry


def test_every_format_from_one_plan(tiny_lm, tmp_path, capsys):
    plan = feature_plan(tiny_lm, sae_source="release:gemma-scope-2b-pt-res-canonical").save(tmp_path / "plan.json")
    outs = {"gguf-control-vector": "p.gguf", "lm-eval": "p.pt", "vllm": "p.json", "neuronpedia": "np.json"}
    assert sorted(outs) == sorted(FORMATS)
    for fmt, name in outs.items():
        assert cli.main(["export", str(plan), "--format", fmt, "--out", str(tmp_path / "out" / name)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["np.json", "p.gguf", "p.json", "p.pt",
                                                                     "p.vectors.gguf"]
    assert "feat -> " in capsys.readouterr().out


def test_unknown_format_and_bad_plan_fail_in_one_line(tiny_lm, tmp_path, capsys):
    plan = feature_plan(tiny_lm).save(tmp_path / "plan.json")
    (tmp_path / "bad.json").write_text("{}")
    for argv, words in [([str(plan), "--format", "onnx"], "--format onnx: unknown export format, expected one of "
                                                          "gguf-control-vector, lm-eval, vllm, neuronpedia"),
                        ([str(tmp_path / "bad.json"), "--format", "vllm"], "is not a steering plan"),
                        ([str(tmp_path / "none.json"), "--format", "vllm"], "no such file")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["export", *argv, "--out", str(tmp_path / "o")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("corrsteer: error: ") and words in err[-1], err


def test_a_format_name_given_twice_is_an_error():
    f = FORMATS["vllm"]
    with pytest.raises(ValueError, match="export format 'vllm' is defined twice"):
        registry((f, Format("vllm", f.write, "again", "")), lambda x: x.name, "export format")

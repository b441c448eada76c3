"""The architecture as a test: corrsteer/ is layered folders whose imports only point down, with no circles, no
function-local imports (optional dependencies aside) and no reaching into another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "corrsteer"
# the floors, from the ground up: a module may import its own floor's siblings and any lower floor. runtime: what
# every stage runs on (checkpoints, torchrun, the output folder); method: ranking, statistics, the variants' picks;
# pipeline: one module per stage over the stage runner; cli: the command line and the command bodies
FLOORS = ["", "model", "tasks", "sae", "report", "export", "runtime", "method", "pipeline", "cli"]
# README's data flow of `corrsteer run`, each step one file under a folder named for its idea
DATA_FLOW = {"load": "pipeline/load.py", "generate": "model/generate.py", "collect": "pipeline/collect.py",
             "rank": "method/rank.py", "validate": "pipeline/validate.py", "steer": "model/steer.py",
             "evaluate": "pipeline/evaluate.py", "report": "pipeline/report.py"}
# imported inside functions on purpose: heavy or optional packages that only some paths need
OPTIONAL = {"datasets", "sae_lens", "gguf", "matplotlib", "transformers", "safetensors", "torch.distributed",
            "pyarrow", "pandas", "huggingface_hub", "urllib", "socket", "copy", "importlib",
            "sentence_transformers", "vllm"}


def modules(pkg: Path = PKG) -> dict[str, Path]:
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        rel = p.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def floor(module: str) -> int:
    if module == "corrsteer.__main__":          # `python -m corrsteer`: the entry point, above the CLI
        return len(FLOORS)
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else ""
    return FLOORS.index(sub)


def imports(path: Path):
    """(imported module, names, line, inside a function?) for every import of a corrsteer module or package."""
    tree = ast.parse(path.read_text())
    funcs = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.module or "", [a.name for a in node.names], node.lineno, id(node) in funcs, node.level
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno, id(node) in funcs, 0


def violations(pkg: Path = PKG) -> list[str]:
    mods = modules(pkg)
    bad, graph = [], {m: set() for m in mods}
    for mod, path in mods.items():
        for target, names, line, local, level in imports(path):
            where = f"{path.relative_to(pkg.parent)}:{line}"
            if level:
                bad.append(f"{where}: relative import (use corrsteer.<folder>.<module>)")
                continue
            if local and target.split(".")[0] != "corrsteer" and not any(
                    target == o or target.startswith(o + ".") for o in OPTIONAL):
                bad.append(f"{where}: function-local import of {target} (not an optional dependency)")
            if not target.startswith("corrsteer") or target.startswith("corrsteer_kernels"):
                continue
            if local:
                bad.append(f"{where}: function-local import of {target}")
            full = [f"{target}.{n}" if f"{target}.{n}" in mods else target for n in names] or [target]
            for t in full:
                if t not in mods:
                    continue
                graph[mod].add(t)
                if floor(t) > floor(mod):
                    bad.append(f"{where}: {mod} imports {t}, which is on a higher floor")
                private = [n for n in names
                           if n.startswith("_") and not n.endswith("__") and f"{target}.{n}" not in mods]
                if private and t == target:
                    bad.append(f"{where}: {mod} imports private names {private} of {t}")
    bad += [f"import circle: {' -> '.join(c)}" for c in circles(graph)]
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_imports_point_down_without_circles_or_private_names():
    assert violations() == []


def test_each_step_of_the_data_flow_is_one_file_named_for_it():
    for step, path in DATA_FLOW.items():
        assert (PKG / path).is_file() and Path(path).stem == step, step
    assert set(DATA_FLOW) == {"load", "generate", "collect", "rank", "validate", "steer", "evaluate", "report"}


@pytest.mark.parametrize("planted, expect", [
    ("from corrsteer.cli.main import main\n", "higher floor"),
    ("def f():\n    from corrsteer.model import lm\n", "function-local import"),
    ("from corrsteer.model.lm import _DTYPES\n", "private names"),
    ("from . import lm\n", "relative import"),
])
def test_the_check_catches_planted_violations(tmp_path, planted, expect):
    pkg = tmp_path / "corrsteer"
    for sub in ("model", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("def main():\n    pass\n")
    (pkg / "model" / "lm.py").write_text("_DTYPES = {}\n")
    (pkg / "model" / "hooks.py").write_text(planted)
    assert any(expect in v for v in violations(pkg)), violations(pkg)


def test_the_check_catches_a_circle(tmp_path):
    pkg = tmp_path / "corrsteer"
    (pkg / "report").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "report" / "__init__.py").write_text("")
    (pkg / "report" / "a.py").write_text("from corrsteer.report.b import x\ny = 1\n")
    (pkg / "report" / "b.py").write_text("from corrsteer.report.a import y\nx = 1\n")
    assert any("import circle" in v for v in violations(pkg))

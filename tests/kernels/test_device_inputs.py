"""Every test that runs a Triton kernel builds its inputs on the device helper (conftest.on_backend / DEVICE, or
.cuda() in GPU-only tests): a static scan of tests/kernels. A CPU tensor handed to backend="triton" or to a launcher
passes here under the interpreter and fails on a CUDA machine, which no CPU run would otherwise show."""
import ast
import pathlib

HERE = pathlib.Path(__file__).parent
LAUNCHERS = {"packed_encode", "topk_encode", "tokens_n_encode", "split_encode", "combine_launch"}


def _on_device(expr) -> bool:
    """expr builds device tensors: it calls on_backend, .cuda(), .to(<a device>) or passes device=..."""
    for n in ast.walk(expr):
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        if isinstance(f, ast.Name) and f.id == "on_backend":
            return True
        if isinstance(f, ast.Attribute) and f.attr == "cuda":
            return True
        if isinstance(f, ast.Attribute) and f.attr == "to" and n.args and _device_arg(n.args[0]):
            return True
        if any(k.arg == "device" for k in n.keywords):
            return True
    return False


def _device_arg(a) -> bool:
    return ((isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("cuda"))
            or (isinstance(a, ast.Attribute) and a.attr == "device") or (isinstance(a, ast.Name) and a.id == "DEVICE"))


def _runs_triton(call: ast.Call) -> bool:
    f = call.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    if name in LAUNCHERS:
        return True
    for k in call.keywords:
        if k.arg == "backend" and ((isinstance(k.value, ast.Constant) and k.value.value == "triton")
                                   or (isinstance(k.value, ast.Name) and k.value.id == "backend")):
            return True
    return False


def _root(a):
    """The variable an expression derives from: x of x[1:], x.T, x.transpose(0, 1).contiguous()."""
    while isinstance(a, (ast.Subscript, ast.Attribute, ast.Call)):
        if isinstance(a, ast.Call):
            if not isinstance(a.func, ast.Attribute):
                return a
            a = a.func
        a = a.value
    return a


def _device_helpers(tree) -> set:
    """Functions of the module that return device tensors (return on_backend(...), ... .cuda(), ...)."""
    return {fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
            and any(isinstance(r, ast.Return) and r.value is not None and _on_device(r.value) for r in ast.walk(fn))}


def _routed(value, routed: set, helpers: set) -> bool:
    """value is on the device: built by the helper, derived from a routed variable, or a device helper's or a
    Triton call's result."""
    if _on_device(value):
        return True
    root = _root(value)
    if isinstance(root, ast.Name):
        return root.id in routed
    if isinstance(root, ast.Call):
        f = root.func
        if isinstance(f, ast.Name) and f.id == "pack_tokens":      # packs x on x's device
            return bool(root.args) and _routed(root.args[0], routed, helpers)
        return (isinstance(f, ast.Name) and f.id in helpers) or _runs_triton(root)
    return False


def unrouted_calls(folder: pathlib.Path) -> list[str]:
    """'file:line' of every call that runs a Triton kernel on a first argument not built on the device helper in
    the same test function (helpers' parameters count as routed: their callers are scanned)."""
    bad = []
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        helpers = _device_helpers(tree)
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            routed = {a.arg for a in fn.args.args if not fn.name.startswith("test_")}
            assigns = [n for n in ast.walk(fn) if isinstance(n, ast.Assign)]
            for _ in range(3):                       # derived names, in any order
                for node in assigns:
                    if _routed(node.value, routed, helpers):
                        routed |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and _runs_triton(node) and node.args \
                        and not _routed(node.args[0], routed, helpers):
                    bad.append(f"{path.name}:{node.lineno}")
    return sorted(bad)


def test_triton_calls_take_device_inputs():
    assert unrouted_calls(HERE) == []


def test_the_scan_catches_a_cpu_tensor(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "def test_a():\n    xp = pack_tokens(x, L)\n    encode_pool(xp, L, sae, backend='triton')\n"
        "def test_b():\n    xp, L = on_backend('triton', pack_tokens(x, L), L)\n    topk_encode(xp, segs)\n"
        "def test_c():\n    packed_encode(pack_tokens(x, L), segs)\n")
    assert unrouted_calls(tmp_path) == ["test_x.py:3", "test_x.py:8"]


if __name__ == "__main__":        # scan another checkout's tests: python test_device_inputs.py <folder>
    import sys
    print("\n".join(unrouted_calls(pathlib.Path(sys.argv[1]))))


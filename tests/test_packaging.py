"""The checkout never shadows an installed distribution: README's commands run from the repository root, where
`python -m` puts the root first on sys.path, so a top-level module or package there would win over a real one
(our old `kernels/` package hid Hugging Face's `kernels`, which transformers imports)."""
import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"corrsteer"}     # the project's own distribution (installed editable from this checkout)


def importable_at_root(root: Path) -> set[str]:
    """Names that `import NAME` resolves to the root as a regular module or package (not a namespace portion,
    which any regular package elsewhere on sys.path beats)."""
    names = set()
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
    return names


def installed_top_level() -> dict[str, str]:
    """top-level import name -> distribution, for every installed distribution but ours."""
    names = {}
    for dist in md.distributions():
        dname = (dist.metadata["Name"] or "").lower()
        if dname in OURS:
            continue
        tops = set((dist.read_text("top_level.txt") or "").split())
        for f in dist.files or ():
            parts = Path(str(f)).parts
            if len(parts) > 1 and not parts[0].endswith((".dist-info", ".data")) and parts[0] != "..":
                tops.add(parts[0])
            elif len(parts) == 1 and parts[0].endswith(".py"):
                tops.add(parts[0][:-3])
        for t in tops:
            names.setdefault(t, dname)
    return names


def test_root_shadows_no_installed_distribution():
    clash = {n: d for n, d in installed_top_level().items() if n in importable_at_root(ROOT)}
    assert not clash, f"the repository root shadows installed top-level names (name: distribution): {clash}"


def test_the_check_sees_a_planted_shadow(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "plain").mkdir()           # a folder without __init__.py is no regular package
    assert importable_at_root(tmp_path) == {"kernels", "setup"}


def test_kernels_folder_is_no_package():
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert (ROOT / "kernels" / "corrsteer_kernels" / "__init__.py").exists()


def test_installed_packages_win_from_the_root():
    """From the root, as `python -m pytest` runs: corrsteer_kernels comes from kernels/corrsteer_kernels, and a
    `kernels` import never lands in this checkout."""
    code = ("import importlib.util, corrsteer_kernels; s = importlib.util.find_spec('kernels'); "
            "print(corrsteer_kernels.__file__); print(s.origin if s else '-')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    ours, kernels = out.stdout.split("\n")[:2]
    assert Path(ours).resolve().is_relative_to(ROOT / "kernels" / "corrsteer_kernels")
    if kernels not in ("-", "None"):
        assert not Path(kernels).resolve().is_relative_to(ROOT), f"`import kernels` finds the checkout: {kernels}"

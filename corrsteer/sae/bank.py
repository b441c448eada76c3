"""SAE banks: one SAE per layer with the hook point it was trained on, in sae-lens's formats.

    bank = load_bank("release:gemma-scope-2b-pt-res-canonical", layers=range(26), lm=lm)   # sae-lens release
    bank = load_bank("/path/to/dir", lm=lm)          # a sae-lens directory, or a folder of them (one per layer)
    bank = load_bank("trained", lm=lm)               # the SAEs `corrsteer train-sae` cached for lm

A sae-lens directory is cfg.json + sae_weights.safetensors; cfg.json's metadata.hook_name says where the SAE
reads the residual (blocks.L.hook_resid_post = output of decoder layer L; hook_resid_pre = its input).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from corrsteer.files import atomic_dir
from corrsteer.model.hooks import HookPoint
from corrsteer.model.lm import as_dtype
from corrsteer.paths import sae_cache_dir
from corrsteer.settings import SettingsError, one_line
from corrsteer_kernels import SAEWeights
from corrsteer_kernels.sae_weights import fold_decoder_norm

# sae-lens id templates per release ({L} = layer)
RELEASE_IDS = {
    "gemma-scope-2b-pt-res-canonical": "layer_{L}/width_16k/canonical",
    "gemma-scope-9b-pt-res-canonical": "layer_{L}/width_16k/canonical",
    "llama_scope_lxr_8x": "l{L}r_8x",
    "gemma-scope-2-270m-pt-res-all": "layer_{L}_width_16k_l0_small",
}
_ARCH = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}


@dataclass
class BankEntry:
    sae: SAEWeights
    hook: HookPoint
    source: str


class SAEBank:
    """{layer index: BankEntry}; iterate in layer order."""

    def __init__(self, entries: dict[int, BankEntry], model_name: str | None = None):
        self.entries = dict(sorted(entries.items()))
        self.model_name = model_name

    def __getitem__(self, layer: int) -> BankEntry:
        return self.entries[layer]

    def __iter__(self):
        return iter(self.entries.items())

    def __len__(self):
        return len(self.entries)

    @property
    def layers(self) -> list[int]:
        return list(self.entries)

    def to(self, device=None, dtype=None) -> "SAEBank":
        return SAEBank({L: BankEntry(e.sae.to(device, dtype), e.hook, e.source) for L, e in self},
                       self.model_name)

    def context(self, source: str) -> dict:
        """What an SAE source resolved to: {layer: SAE location}, with the hook each reads, and (local directories)
        the bank's training record (training_record)."""
        out = dict(source=source, layers={str(L): dict(sae=e.source, hook=e.hook.hook_name) for L, e in self})
        record = training_record([e.source for _, e in self])
        return out if record is None else dict(out, training=record)

    def check(self, lm) -> "SAEBank":
        """Fail clearly if an SAE does not fit the model: width or hook layer."""
        for L, e in self:
            if e.sae.d_in != lm.d_model:
                raise ValueError(f"SAE for layer {L} ({e.source}) reads d_in={e.sae.d_in} but {lm.name} is "
                                 f"{lm.d_model} wide")
            if e.hook.layer >= lm.n_layers:
                raise ValueError(f"SAE {e.source} hooks {e.hook.hook_name} but {lm.name} has only "
                                 f"{lm.n_layers} layers (0..{lm.n_layers - 1})")
        return self


# ---------------------------------------------------------------------------------------------------------------
# the sae-lens directory format (read and written without importing sae-lens)
# ---------------------------------------------------------------------------------------------------------------
def save_sae_dir(path, sae: SAEWeights, hook: HookPoint, model_name: str = "", extra: dict | None = None) -> Path:
    """Write cfg.json + sae_weights.safetensors as sae-lens 6 writes them (loadable by SAE.load_from_disk)."""
    with atomic_dir(path) as tmp:
        _write_sae_dir(tmp, sae, hook, model_name, extra)
    return Path(path)


def _write_sae_dir(tmp: Path, sae: SAEWeights, hook: HookPoint, model_name: str, extra: dict | None) -> None:
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec,
               "b_dec": sae.b_dec if sae.b_dec is not None else torch.zeros(sae.d_in)}
    if sae.activation == "jumprelu":
        tensors["threshold"] = sae.threshold
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, tmp / "sae_weights.safetensors")
    cfg = {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": sae.b_dec is not None, "normalize_activations": "none",
           "reshape_activations": "none", "architecture": _ARCH[sae.activation],
           # sae_lens_version marks the 6.x cfg layout (older layouts keep hook_name at the top level)
           "metadata": {"sae_lens_version": "6.0.0", "written_by": "corrsteer", "hook_name": hook.hook_name,
                        "model_name": model_name, **(extra or {})}}
    if sae.activation == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2))


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def load_sae_dir(path, device="cpu") -> BankEntry:
    """Read a sae-lens directory (standard, jumprelu or topk architecture). A folder that a trainer swapped for a
    new one while it was read (save_sae_dir) is read again, so cfg.json and the weights are of one SAE."""
    path = Path(path)
    for _ in range(3):
        before = _inode(path)
        try:
            entry = _load_sae_dir_once(path, device)
        except (OSError, ValueError):
            if _inode(path) == before:
                raise
            continue
        if _inode(path) == before:
            return entry
    return _load_sae_dir_once(path, device)


def _load_sae_dir_once(path: Path, device) -> BankEntry:
    if not (path / "cfg.json").exists() or not (path / "sae_weights.safetensors").exists():
        raise FileNotFoundError(f"{path} is not a sae-lens SAE directory (needs cfg.json and sae_weights.safetensors)")
    cfg = json.loads((path / "cfg.json").read_text())
    arch = cfg.get("architecture", "standard")
    acts = {v: k for k, v in _ARCH.items()}
    if arch not in acts:
        raise ValueError(f"{path}: unsupported architecture {arch!r} (supported: {sorted(acts)})")
    if cfg.get("normalize_activations", "none") != "none":
        raise ValueError(f"{path}: normalize_activations={cfg['normalize_activations']!r} is not supported")
    hook_name = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    if not hook_name:
        raise ValueError(f"{path}: cfg.json names no hook (metadata.hook_name)")
    where = f"the SAE for layer {HookPoint.parse(hook_name).layer} ({path / 'sae_weights.safetensors'})"
    try:
        w = load_file(str(path / "sae_weights.safetensors"), device=str(device))
    except Exception as e:           # safetensors' own error type for a damaged file
        if type(e).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{where} is damaged ({' '.join(str(e).split())[:120]})") from None
    for key in ("W_enc", "b_enc", "W_dec"):
        if key not in w:
            raise ValueError(f"{path}: sae_weights.safetensors lacks {key}")
    if tuple(w["W_enc"].shape) != (cfg["d_in"], cfg["d_sae"]):
        raise ValueError(f"{path}: W_enc is {tuple(w['W_enc'].shape)} but cfg.json says d_in={cfg['d_in']}, "
                         f"d_sae={cfg['d_sae']}")
    W_dec = w["W_dec"]
    b_enc = w["b_enc"]
    W_enc = w["W_enc"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        W_enc, b_enc, W_dec = fold_decoder_norm(W_enc, b_enc, W_dec)
    try:
        sae = SAEWeights(W_enc=W_enc, b_enc=b_enc, threshold=w.get("threshold"), k=cfg.get("k"), activation=acts[arch],
                         b_dec=w.get("b_dec") if cfg.get("apply_b_dec_to_input", True) else None, W_dec=W_dec)
    except ValueError as e:          # NaN / inf weights, mismatched shapes
        raise ValueError(f"{where}: {e}") from None
    return BankEntry(sae, HookPoint.parse(hook_name), str(path))


def _from_release(release: str, layers, id_template: str | None, device) -> dict[int, BankEntry]:
    try:
        from sae_lens import SAE
    except ImportError as e:
        raise ImportError("loading a sae-lens release needs `pip install sae-lens`") from e
    template = id_template or RELEASE_IDS.get(release)
    if template is None:
        raise ValueError(f"no id template known for release {release!r}: pass one, "
                         "e.g. 'layer_{L}/width_16k/canonical'")
    out = {}
    for L in layers:
        sae_id = template.format(L=L)
        sae = SAE.from_pretrained(release, sae_id, device=str(device))
        sae = sae[0] if isinstance(sae, tuple) else sae
        out[L] = BankEntry(SAEWeights.from_sae_lens(sae), HookPoint.parse(sae.cfg.metadata.hook_name),
                           f"{release}/{sae_id}")
    return out


def load_bank(source: str, lm=None, layers=None, id_template: str | None = None, device=None,
              sae_dir=None, dtype=None) -> SAEBank:
    """Load an SAE bank from "release:<name>", "trained" (the cache of `corrsteer train-sae`), or a path, onto
    `device` (default: lm's device, else the CPU); dtype (e.g. torch.bfloat16 or "bfloat16") casts W_enc and W_dec,
    thresholds and biases stay fp32."""
    model_name = lm.name if lm is not None else None
    if device is None:
        device = getattr(lm, "device", None) or "cpu"      # an lm without .device: the CPU
    dtype = as_dtype(dtype)
    if source.startswith("release:"):
        if layers is None:
            if lm is None:
                raise ValueError("loading a release needs layers= or lm=")
            layers = range(lm.n_layers)
        entries = _from_release(source[len("release:"):], layers, id_template, device)
    else:
        path = sae_cache_dir(model_name or "", sae_dir) if source == "trained" else Path(source)
        if not path.exists():
            hint = " (run `corrsteer train-sae` first)" if source == "trained" else ""
            raise FileNotFoundError(f"no SAEs at {path}{hint}")
        dirs = [path] if (path / "cfg.json").exists() else sorted(p for p in path.iterdir()
                                                                   if (p / "cfg.json").exists())
        if not dirs:
            raise FileNotFoundError(f"no sae-lens SAE directories under {path}")
        entries = {}
        for d in dirs:
            e = load_sae_dir(d, device)
            if layers is None or e.hook.layer in layers:
                if e.hook.layer in entries:
                    raise ValueError(f"two SAEs for layer {e.hook.layer}: {entries[e.hook.layer].source} and {d}")
                entries[e.hook.layer] = e
    bank = SAEBank(entries, model_name)
    if dtype is not None or any(e.sae.device != torch.device(device) for _, e in bank):
        bank = bank.to(device, dtype)
    return bank.check(lm) if lm is not None else bank


def training_record(dirs) -> dict | None:
    """What local sae-lens directories record of their training: digest (sha256 over their weight files in the
    order given, first 16 hex digits: two banks with one digest hold the same weights), and the arithmetic, seed and
    corpus seed their cfg.json metadata names (one value, or a list when the layers differ; "unrecorded" where
    absent, as in banks trained before it was recorded). None when a source is not a local directory."""
    paths = [Path(d) for d in dirs]
    if not paths or not all((p / "sae_weights.safetensors").is_file() for p in paths):
        return None
    h = hashlib.sha256()
    fields = {"arithmetic": "matmul_dtype", "seed": "seed", "corpus_seed": "corpus_seed"}
    seen = {name: [] for name in fields}
    for p in paths:
        with open(p / "sae_weights.safetensors", "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        try:
            meta = json.loads((p / "cfg.json").read_text()).get("metadata") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            meta = {}
        for name, key in fields.items():
            v = meta.get(key, "unrecorded")
            if v not in seen[name]:
                seen[name].append(v)
    return dict(digest=h.hexdigest()[:16], **{n: v[0] if len(v) == 1 else v for n, v in seen.items()})


# ---------------------------------------------------------------------------------------------------------------
# checks made before the model loads: what an SAE folder covers
# ---------------------------------------------------------------------------------------------------------------
def sae_dirs(path: Path) -> list[Path]:
    """The sae-lens directories at path: path itself, or the folders below it that hold a cfg.json."""
    if (path / "cfg.json").exists():
        return [path]
    return sorted(p for p in path.iterdir() if (p / "cfg.json").exists()) if path.is_dir() else []


def sae_layers(source: str) -> list[int] | None:
    """The layers an SAE directory (or folder of them) covers, read from cfg.json alone; None for other sources."""
    if source == "trained" or source.startswith("release:"):
        return None
    path = Path(source)
    dirs = sae_dirs(path) if path.exists() else []
    if not dirs:
        raise SettingsError(f"--saes {source}: no sae-lens SAE directory there, expected cfg.json + "
                            "sae_weights.safetensors (or a folder of such directories)")
    layers = []
    for d in dirs:
        try:
            meta = json.loads((d / "cfg.json").read_text(encoding="utf-8"))
            hook = (meta.get("metadata") or {}).get("hook_name") or meta.get("hook_name")
            layers.append(HookPoint.parse(hook).layer)
        except (ValueError, AttributeError, TypeError, OSError) as e:
            raise SettingsError(f"--saes {d / 'cfg.json'}: {one_line(e)}, expected a sae-lens cfg.json naming "
                                "a residual hook such as blocks.3.hook_resid_post") from None
    return sorted(layers)


def layers_covered(wanted: list[int] | None, have: list[int], text: str | None) -> None:
    """Every layer --layers asks for has an SAE, and at least one layer is left."""
    if not have:
        raise SettingsError("no SAE was loaded, expected at least one layer with an SAE")
    missing = [L for L in (wanted or []) if L not in have]
    if missing:
        raise SettingsError(f"--layers {text}: no SAE for layer{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(str, missing))}, expected layers the SAEs cover: "
                            f"{', '.join(map(str, have))}")

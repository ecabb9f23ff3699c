"""The weight type llama.cpp runs: the shipped GGUF (``native``) or a copy re-encoded once as Q8_0, F16 or F32.

Why: llama.cpp's CPU prompt processing is a matrix multiplication whose speed depends on the weight type. Its fast
GEMM kernels (llamafile's tinyBLAS, used for batches of prompt tokens) cover F32, F16, BF16, Q8_0 and the simple
``_0`` quantisations, not Q4_1 or the K-quants; other types fall back to slower vector-dot kernels. Decoding, by
contrast, is memory-bound: fewer bytes per weight decode faster. So the fastest type is a property of the machine,
the model and the prompt/answer length ratio — measured by ``bench/distill_throughput.py`` (BENCHMARKS.md).

How: :func:`weights_gguf` reads the GGUF with ``gguf-py`` (``GGUFReader``), de-quantises every tensor to float32
(``gguf.quants.dequantize``: exact, the values llama.cpp itself multiplies with), re-encodes the matrices in the
target type (vectors such as norms stay F32, as llama.cpp's converters write them; a tensor already in the target
type is copied byte for byte) and copies every metadata field, with ``general.file_type`` set to the new type.
The copy is written once into ``<cache>/weights/`` under a lock and renamed into place (a killed conversion leaves
nothing half-written). ``f32``/``f16`` hold the same numbers as the shipped file (F16 rounds them to half
precision); ``q8_0`` re-quantises them, a small extra rounding. The arithmetic changes either way (float
activations instead of 8-bit ones), so the answers can differ from ``native`` at near-ties: the weight type is part
of a run's fingerprint.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHT_TYPES = ("native", "q8_0", "f16", "f32")


def _targets():
    import gguf

    Q = gguf.GGMLQuantizationType
    return {"q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0), "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
            "f32": (Q.F32, gguf.LlamaFileType.ALL_F32)}


def weights_path(src: str | Path, wtype: str, cache_dir: str | Path | None = None) -> Path:
    """Where the ``wtype`` copy of ``src`` lives (nothing is converted)."""
    from sdft.models import cache_root, file_key

    src = Path(src)
    return cache_root(cache_dir) / "weights" / f"{src.stem}-{file_key(src)}-{wtype}.gguf"


def weights_gguf(src: str | Path, wtype: str = "native", cache_dir: str | Path | None = None,
                 log=print) -> Path:
    """``src`` itself for ``native``; else its copy in ``wtype`` (converted once, then reused)."""
    if wtype not in WEIGHT_TYPES:
        raise ValueError(f"weights {wtype!r}: use one of {', '.join(WEIGHT_TYPES)}")
    src = Path(src)
    if wtype == "native":
        return src
    if not src.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {src}")
    out = weights_path(src, wtype, cache_dir)
    if out.is_file():
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if out.is_file():  # another process converted it meanwhile
            return out
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        try:
            log(f"writing the {wtype} weights of {src.name} (once) -> {out}")
            convert(src, tmp, wtype)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def convert(src: Path, dest: Path, wtype: str) -> None:
    """Re-encode every matrix of the GGUF ``src`` in ``wtype`` (q8_0 | f16 | f32) into ``dest``."""
    import gguf
    import numpy as np

    qtype, file_type = _targets()[wtype]
    Q = gguf.GGMLQuantizationType
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(dest), arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = int(file_type) if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    if gguf.Keys.General.FILE_TYPE not in reader.fields:
        writer.add_file_type(int(file_type))
    block = gguf.GGML_QUANT_SIZES[Q.Q8_0][0]
    for t in reader.tensors:
        if t.tensor_type == qtype:  # already the target type: the same bytes
            writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=qtype)
            continue
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        matrix = x.ndim >= 2
        if not matrix or qtype == Q.F32 or (qtype == Q.Q8_0 and x.shape[-1] % block):
            writer.add_tensor(t.name, np.ascontiguousarray(x))  # vectors (norms, biases) stay F32
        elif qtype == Q.F16:
            writer.add_tensor(t.name, x.astype(np.float16))
        else:
            q = gguf.quants.quantize(x, Q.Q8_0)
            writer.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

"""Shared fixtures: a tiny randomly initialised Llama with the real SmolLM2 tokenizer, and paths to ../shared."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED = ROOT.parent / "shared" / "data"


def shared(path: str) -> Path:
    p = SHARED / path
    if not p.exists():
        pytest.skip(f"{p} not present (tests read ../shared/data when it exists)")
    return p


@pytest.fixture(scope="session", autouse=True)
def sandbox_mode_without_bwrap():
    """Where bubblewrap cannot run here, HumanEval scoring anywhere in the suite would raise SandboxUnavailable:
    then the sandbox's default mode is guard for the session (with a warning); where it runs, nothing changes."""
    from sdft.evaluation.sandbox import bwrap_status, using_mode

    ok, reason = bwrap_status()
    if ok:
        yield
        return
    warnings.warn(f"bwrap sandbox unavailable here ({reason}): the sandbox tests that need bwrap are skipped and "
                  "HumanEval scoring runs in guard mode (install bubblewrap, e.g. apt-get install bubblewrap)",
                  stacklevel=1)
    with using_mode("guard"):
        yield


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "smollm2-tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer, hidden-64 Llama with the SmolLM2 tokenizer, saved as a normal HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    d = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(d))
    tokenizer.save_pretrained(str(d))
    return d

"""sdft.models: the tokenizer-class memo (load_tokenizer) lives in the model cache the caller names."""

from __future__ import annotations

import json

from sdft.models import ResolvedModel, load_tokenizer


def test_the_tokenizer_memo_is_kept_in_the_named_cache_and_then_used(tiny_model_dir, tmp_path, monkeypatch):
    default, named = tmp_path / "default", tmp_path / "named"
    monkeypatch.setenv("SDFT_CACHE", str(default))
    model = ResolvedModel("tiny", tiny_model_dir)
    first = load_tokenizer(model, cache_dir=named)
    memos = list((named / "tokenizers").glob("*.json"))
    assert len(memos) == 1 and not default.exists()
    assert json.loads(memos[0].read_text())["class"] == type(first).__name__
    again = load_tokenizer(model, cache_dir=named)  # from the memo: the same class, the same ids
    text = "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n"
    assert type(again) is type(first)
    assert again(text, add_special_tokens=False)["input_ids"] == first(text, add_special_tokens=False)["input_ids"]
    assert again.pad_token == first.pad_token is not None


def test_a_stale_memo_falls_back_to_autotokenizer(tiny_model_dir, tmp_path):
    model = ResolvedModel("tiny", tiny_model_dir)
    good = load_tokenizer(model, cache_dir=tmp_path)
    memo = next((tmp_path / "tokenizers").glob("*.json"))
    memo.write_text(json.dumps({"class": "NoSuchTokenizerClass"}))
    tok = load_tokenizer(model, cache_dir=tmp_path)
    assert type(tok) is type(good)

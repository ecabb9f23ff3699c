"""`sdft gap`: per-token NLL checked against a hand computation on a short sequence."""

import json
import math

import torch

from sdft.distillation.gap import measure_gap, token_nll


def test_token_nll_matches_hand_computation(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    ids = [5, 17, 42, 7, 99]
    mask = [0, 0, 1, 1, 1]  # the last three tokens are the response
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    hand = 0.0
    for t in (2, 3, 4):  # log p(ids[t] | ids[:t]) comes from position t-1
        hand -= torch.log_softmax(logits[t - 1], -1)[ids[t]].item()
    hand /= 3
    short = {"input_ids": [3, 4, 8], "completion_mask": [0, 1, 1]}
    got = token_nll(model, [{"input_ids": ids, "completion_mask": mask}, short], batch_size=2, pad_id=0)
    assert math.isclose(got[0], hand, rel_tol=1e-5)
    alone = token_nll(model, [short], batch_size=1)
    assert math.isclose(got[1], alone[0], rel_tol=1e-5)  # padding in a batch changes nothing


def test_measure_gap_on_a_distillation_folder(tmp_path, tiny_model_dir):
    d = tmp_path / "dist"
    d.mkdir()
    rows = [{"index": i, "instruction": f"q{i}", "input": "", "original": f"original answer {i}",
             "output": f"my own answer {i}" if i % 2 else f"original answer {i}", "accepted": bool(i % 2)}
            for i in range(4)]
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.json").write_text(json.dumps({"config": {"task": "alpaca", "model": str(tiny_model_dir)}}))
    res = measure_gap(d, out=tmp_path / "gap", log=lambda m: None)
    assert res["rows"] == 4 and res["original"]["n"] == 4
    for p in res["per_row"]:
        if not p["accepted"]:  # identical targets: identical NLL
            assert math.isclose(p["nll_original"], p["nll_distilled"], rel_tol=1e-6)
    assert (tmp_path / "gap" / "gap.json").exists()

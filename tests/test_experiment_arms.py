"""Experiment arms and axes: distillation frames, the `self` arm, retention stages, seeds, and the gap stage scoring
under the very prompt tokens the trainer trains on."""

import json
from pathlib import Path

import pytest
import yaml

from test_experiment import write_cfg

from sdft.options import ConfigError
from sdft.experiment import load_experiment, plan
from sdft.training.common import choose_targets

ARMS = dict(methods=["seed", "vanilla", "sdft", "self"], frames=["release", "train"], seeds=[1, 2],
            train={"max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "template": "plain"},
            retention={"tasks": ["advbench-direct", "alpacaeval"], "max_tokens": 8})


def test_frames_self_and_retention_expand(tmp_path, tiny_model_dir):
    st = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, **ARMS)))
    dist = [s for s in st if s.kind == "distill"]
    assert sorted((s.meta["seed"], s.config.frame) for s in dist) == [
        (1, "release"), (1, "self"), (1, "train"), (2, "release"), (2, "self"), (2, "train")]
    for s in dist:  # the train/self frames render the run's train template; release does not need it
        assert s.config.train_template == (None if s.config.frame == "release" else "plain")
    trains = [s for s in st if s.kind == "train"]
    labels = [(s.meta["seed"], s.meta["arm"], s.meta.get("frame")) for s in trains]
    assert sorted(labels, key=str) == sorted([(k, a, f) for k in (1, 2) for a, f in (
        ("self", None), ("sdft", "release"), ("sdft", "train"), ("vanilla", None))], key=str)
    by = {(s.meta["seed"], s.meta["arm"], s.meta.get("frame")): s for s in trains}
    self_dist = next(s for s in dist if s.meta["seed"] == 1 and s.config.frame == "self")
    assert by[(1, "self", None)].deps == [self_dist.key] and by[(1, "self", None)].config.method == "sdft"
    assert all(s.config.template == "plain" for s in trains)
    gaps = [s for s in st if s.kind == "gap"]
    assert len(gaps) == 6 and all(g.config["template"] == "plain" for g in gaps)
    ret = [s for s in st if s.kind == "retention"]
    assert len(ret) == 1 + len(trains) and ret[0].meta == {"arm": "seed"} and ret[0].config.answers is None
    assert ret[0].config.tasks == ("advbench-direct", "alpacaeval") and ret[0].config.max_tokens == 8
    assert ret[0].config.limit == 3  # the eval's limit: the same prompts as the scores
    for r in ret[1:]:
        assert r.config.answers == str(ret[0].folder(Path(tmp_path / "exp"))) and ret[0].key in r.deps
    assert len({s.key for s in st}) == len(st)


def test_new_axes_keep_the_old_stages_cached(tmp_path, tiny_model_dir):
    old = {s.key for s in plan(load_experiment(write_cfg(tmp_path, tiny_model_dir)))}
    new = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, methods=["seed", "vanilla", "sdft", "self"],
                                         frames=["release", "train"], retention={"tasks": ["advbench"]})))
    assert old < {s.key for s in new}  # the release frame is the distillation made before frames existed
    explicit_keep = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, distill={
        "max_new_tokens": 4, "decoding": "greedy", "backend": "hf", "truncated": "keep"})))
    assert {s.key for s in explicit_keep} == old


def test_bad_frames_and_retention_keys_fail(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="frames"):
        load_experiment(write_cfg(tmp_path, tiny_model_dir, frames=["self"]))
    with pytest.raises(ConfigError, match=r"\[retention\].*max_token"):
        load_experiment(write_cfg(tmp_path, tiny_model_dir, retention={"max_token": 3}))
    with pytest.raises(ConfigError, match=r"\[retention\].*nope"):
        load_experiment(write_cfg(tmp_path, tiny_model_dir, retention={"tasks": ["nope"]}))


def test_seeds_change_sampling_permutation_and_training(tmp_path, tiny_model_dir, tokenizer):
    from sdft.distillation.distill import distill
    from sdft.generation import Completion

    st = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, seeds=[1, 2])))
    dist = {s.meta["seed"]: s.config for s in st if s.kind == "distill"}
    trains = {s.meta["seed"]: s.config for s in st if s.kind == "train" and s.meta["arm"] == "sdft"}
    assert dist[1].seed == 1 and dist[2].seed == 2 and trains[1].seed == 1 and trains[2].seed == 2
    rows = [{"index": i, "output": f"r{i}", "original": f"o{i}"} for i in range(8)]
    orders = [[r["index"] for r, _ in choose_targets(rows, "sdft", None, None, trains[k].seed)[0]] for k in (1, 2)]
    assert orders[0] != orders[1]  # each seed trains on its own permutation

    class Seeds:  # records the sampling seed of every generate call
        name = "seeds"

        def __init__(self):
            self.seeds = []

        def generate(self, prompts, params):
            self.seeds.append(params.seed)
            return [Completion("so 2", "stop", 1, 1) for _ in prompts]

    seen = {}
    for k in (1, 2):
        be = Seeds()
        distill(dist[k], backend=be, tokenizer=tokenizer, progress=False)
        seen[k] = be.seeds
    assert seen[1] and seen[1] != seen[2] and seen[1][0] == 1 + 0 and seen[2][0] == 2 + 0  # seed + row index


def test_gap_scores_under_the_trainers_prompt_tokens(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """The gap stage's prompt token ids equal the trainer's for the same rows and config (train template plain in
    the chat format here, not the task's default alpaca)."""
    import sdft.distillation.gap as gap
    from sdft.distillation.distill import distill
    from sdft.experiment import run_stage
    from sdft.generation import Completion
    from sdft.training.common import prepare_run, tokenize

    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Say {w}.", "input": "", "output": f"{w}!"}
                                for w in ("hi", "bye", "yes")]))
    cfg = load_experiment(write_cfg(tmp_path, tiny_model_dir, task="alpaca", data=str(data), methods=["seed", "sdft"],
                                    train={"max_steps": 1, "template": "plain"}))
    st = plan(cfg)
    by_key = {s.key: s for s in st}
    root = Path(cfg.out)
    d = next(s for s in st if s.kind == "distill")

    class Echo:
        name = "echo"

        def generate(self, prompts, params):
            return [Completion("My answer.", "stop", 1, 1) for _ in prompts]

    distill(d.config, backend=Echo(), tokenizer=tokenizer, progress=False)
    seen = []
    monkeypatch.setattr(gap, "token_nll", lambda model, feats, *a, **k: seen.append(feats) or [0.0] * len(feats))
    g = next(s for s in st if s.kind == "gap")
    g.folder(root).mkdir(parents=True)
    run_stage(g, root, by_key, lambda m: None, False)
    tr = next(s for s in st if s.kind == "train")
    run = prepare_run(tr.config, log=lambda m: None)
    assert run.template.name == "plain" and json.loads((g.folder(root) / "gap.json").read_text())["template"] == "plain"
    feats, _ = tokenize(run.pairs, run.tokenizer, run.template, run.fmt, tr.config.layout, tr.config.cutoff_len)
    trainer = {r["index"]: f["input_ids"][:f["completion_mask"].index(1)] for (r, _), f in zip(run.pairs, feats)}
    assert len(seen) == 2
    for kind_feats in seen:  # original and distilled targets: rows in index order
        for i, f in enumerate(kind_feats):
            assert f["input_ids"][:f["completion_mask"].index(1)] == trainer[i]


@pytest.mark.slow
def test_frames_self_and_retention_run_into_the_report(tmp_path, tiny_model_dir):
    """The whole DAG on the tiny model: three distillations (release, train, self), four arms, retention stages."""
    from sdft.experiment import run_experiment

    p = write_cfg(tmp_path, tiny_model_dir, methods=["seed", "vanilla", "sdft", "self"], frames=["release", "train"],
                  train={"max_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
                         "template": "plain"},
                  eval={"tasks": ["advbench-direct"], "limit": 2, "backend": "hf", "max_new_tokens": 4},
                  retention={"tasks": ["advbench-direct"], "max_tokens": 4}, shift_task=None)
    cfg = load_experiment(p)
    report = run_experiment(cfg, progress=False, log=lambda m: None)
    md = (report.parent / "report.md").read_text()
    assert md.index("## Answer") < md.index("## Scores by arm")
    assert "Go/no-go: SDFT targets' (release frame)" in md and "(train frame)" in md and "vs self" in md
    for arm in ("vanilla", "sdft[release]", "sdft[train]", "self"):
        assert f"| {arm} |" in md
    assert "## Retention" in md and (report.parent / "report" / "forest.png").exists()
    st = plan(cfg)
    self_rows = next(s for s in st if s.kind == "distill" and s.config.frame == "self").folder(Path(cfg.out))
    m = json.loads((self_rows / "manifest.json").read_text())
    assert m["frame"] == "self" and m["train_template"] == "plain"
    seed_ret = next(s for s in st if s.kind == "retention" and s.meta["arm"] == "seed").folder(Path(cfg.out))
    assert len((seed_ret / "advbench-direct" / "answers.jsonl").read_text().splitlines()) == 2


def test_retention_run_only_options_keep_the_keys(tmp_path, tiny_model_dir):
    a = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, retention={"tasks": ["advbench"]})))
    b = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, retention={"tasks": ["advbench"], "batch_size": 2})))
    c = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, retention={"tasks": ["advbench"], "max_tokens": 9})))
    keys = lambda st: [s.key for s in st if s.kind == "retention"]  # noqa: E731
    assert keys(a) == keys(b) and not set(keys(a)) & set(keys(c))
    assert next(s for s in b if s.kind == "retention").config.batch_size == 2


def test_frame_seeds_run_a_frame_for_fewer_seeds(tmp_path, tiny_model_dir):
    cfg = dict(ARMS, frames=["train", "release"], frame_seeds={"release": [1]})
    st = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, **cfg)))
    dist = sorted((s.meta["seed"], s.config.frame) for s in st if s.kind == "distill")
    assert dist == [(1, "release"), (1, "self"), (1, "train"), (2, "self"), (2, "train")]
    trains = sorted(((s.meta["seed"], s.meta["arm"], s.meta.get("frame")) for s in st if s.kind == "train"), key=str)
    assert (2, "vanilla", None) in trains and (2, "sdft", "release") not in trains and (1, "sdft", "release") in trains
    full = {s.key for s in plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, **dict(cfg, frame_seeds={}))))}
    assert {s.key for s in st} < full  # the seeds that keep every frame keep their stages
    with pytest.raises(ConfigError, match="frame_seeds"):
        load_experiment(write_cfg(tmp_path, tiny_model_dir, **dict(cfg, frame_seeds={"release": [7]})))
    with pytest.raises(ConfigError, match="frame_seeds"):
        load_experiment(write_cfg(tmp_path, tiny_model_dir, **dict(cfg, frame_seeds={"self": [1]})))

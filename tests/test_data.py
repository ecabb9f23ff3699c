"""Data loading in every supported format, and errors that name file, row and field."""

import gzip
import json

import pytest
from hypothesis import given, settings, strategies as st

from conftest import shared
from sdft.data import (DataError, Source, builtin_data_dir, file_sha256, load_examples, resolve_source,
                       select_indices)


def _load(path, **kw):
    return load_examples(resolve_source(str(path), **kw))


def write(tmp_path, name, obj, jsonl=False):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in obj) if jsonl else json.dumps(obj))
    return p


def test_alpaca_json_and_jsonl(tmp_path):
    rows = [{"instruction": "a", "input": "b", "output": "c"}, {"instruction": "d", "output": "e"}]
    for p in (write(tmp_path, "x.json", rows), write(tmp_path, "x.jsonl", rows, jsonl=True)):
        ex = _load(p)
        assert [(e.instruction, e.input, e.output) for e in ex] == [("a", "b", "c"), ("d", "", "e")]


def test_history_and_messages_and_sharegpt(tmp_path):
    hist = write(tmp_path, "h.json", [{"instruction": "q2", "output": "a2", "history": [["q1", "a1"]]}])
    e = _load(hist)[0]
    assert e.instruction == "q2" and e.history[0].user == "q1" and e.history[0].assistant == "a1"
    msgs = write(tmp_path, "m.jsonl", [{"messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}], jsonl=True)
    e = _load(msgs)[0]
    assert (e.system, e.instruction, e.output, len(e.history)) == ("S", "q2", "a2", 1)
    sg = write(tmp_path, "s.json", [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
    e = _load(sg)[0]
    assert (e.instruction, e.output) == ("q", "a")


def test_column_mapping_and_aliases(tmp_path):
    p = write(tmp_path, "g.json", [{"question": "q", "answer": "a"}])
    assert _load(p)[0].output == "a"  # known alias
    p = write(tmp_path, "c.json", [{"Q": "q", "A": "a"}])
    e = _load(p, columns="instruction=Q,output=A")[0]
    assert (e.instruction, e.output) == ("q", "a")
    e = _load(p, columns="prompt=Q,response=A")[0]  # LLaMA-Factory names too
    assert e.output == "a"


def test_dataset_info_by_name_shared_and_builtin():
    src = resolve_source("alpaca_train", dataset_dir=str(shared("sdft")))
    ex = load_examples(src)
    assert len(ex) == 2000 and ex[0].input == "A salesperson is giving a presentation."[:0] + ex[0].input
    builtin = load_examples(resolve_source("gsm8k_train"))
    assert len(builtin) == 7473 and builtin[0].output.endswith("The answer is 72.")
    assert file_sha256(src.path) == "8857456d329dd0a320a03273f4d837e750cb54bb8aee90fb886301fc95f77205"
    assert file_sha256(builtin_data_dir() / "alpaca/alpaca_train.json.gz") == file_sha256(src.path)


def test_lima_history_rows():
    ex = load_examples(resolve_source("lima_train"))
    assert len(ex) == 1029 and sum(bool(e.history) for e in ex) == 29


def test_save_to_disk(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"instruction": "a", "input": "", "output": "b"}]).save_to_disk(str(tmp_path / "ds"))
    assert _load(tmp_path / "ds")[0].output == "b"


@pytest.mark.parametrize("content,needle", [
    ('[{"instruction": "a", "output": "b"}, {"instruction": "c"}]', "row 1: field 'output': missing"),
    ('[{"instruction": "a", "output": 5}]', "row 0: field 'output': expected a string"),
    ('[{"instruction": "", "output": "x"}]', "row 0: field 'instruction': empty"),
    ('[1, 2]', "row 0: expected an object"),
    ('[{"instruction": "a", "output": "b", "history": [["only one"]]}]', "field 'history': turn 0"),
    ('{"instruction": ', "invalid JSON at line 1"),
    ('[]', "no rows"),
])
def test_errors_name_file_row_field(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataError) as e:
        _load(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_jsonl_error_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: invalid JSON"):
        _load(p)


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(DataError, match="no dataset named 'nope'"):
        resolve_source("nope")
    with pytest.raises(DataError, match="folder not found"):
        resolve_source("alpaca_train", dataset_dir=str(tmp_path / "missing"))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"hub": {"hf_hub_url": "org/x"}}))
    with pytest.raises(DataError, match="never downloads"):
        resolve_source("hub", dataset_dir=str(tmp_path))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(
                               st.sampled_from(["instruction", "input", "output", "history", "messages", "x"]), c,
                               max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(json_values, max_size=4), garble=st.integers(min_value=-1, max_value=40))
def test_fuzzed_files_fail_cleanly(tmp_path_factory, rows, garble):
    p = tmp_path_factory.mktemp("fz") / "f.json"
    text = json.dumps(rows)
    if garble >= 0:
        text = text[:garble]
    p.write_text(text)
    try:
        ex = _load(p)
    except DataError as e:
        assert str(p) in str(e)
    else:
        assert all(isinstance(e.output, str) and e.output.strip() for e in ex)


def test_gz_and_binary_garbage(tmp_path):
    p = tmp_path / "x.json.gz"
    with gzip.open(p, "wt") as f:
        json.dump([{"instruction": "a", "output": "b"}], f)
    assert _load(p)[0].output == "b"
    b = tmp_path / "bin.json"
    b.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="bin.json"):
        _load(b)


def test_select_indices_nested_and_paper_cut():
    small = select_indices(100, subset=10, seed=1)
    big = select_indices(100, subset=20, seed=1)
    assert set(small) <= set(big) and len(big) == 20
    assert select_indices(100, subset=10, seed=2) != small
    assert len(select_indices(12_000)) == 2000 and len(select_indices(12_000, paper_cut=False)) == 12_000
    assert len(select_indices(7473)) == 7473  # GSM8K is used whole
    assert select_indices(10, limit=3) == [0, 1, 2]
    shards = [select_indices(10, shard=(i, 3)) for i in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))

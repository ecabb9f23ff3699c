from sdft.store import RecordWriter, atomic_write_json, read_json, read_records


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    p = tmp_path / "rows.jsonl"
    with RecordWriter(p) as w:
        w.write([{"index": 0}, {"index": 1}])
    with open(p, "a") as f:
        f.write('{"index": 2, "out')  # a kill mid-write
    assert [r["index"] for r in read_records(p)] == [0, 1]
    assert p.read_text().endswith("}\n")  # truncated back to the last whole line
    with RecordWriter(p) as w:
        w.write([{"index": 2}, {"index": 1}])  # a duplicate is never counted twice
    assert [r["index"] for r in read_records(p)] == [0, 1, 2]


def test_atomic_json(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]

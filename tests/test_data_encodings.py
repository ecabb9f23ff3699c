"""Data files load as UTF-8 with or without a byte-order mark, with CRLF line ends, and as UTF-16 with a mark
(LE and BE); anything else is a DataError naming the file and the byte offset (issue #15 item 7)."""

import gzip
import json

import pytest

from sdft.data import DataError, Source, load_examples, load_records, read_text_file
from sdft.evaluation.benchmarks.advbench import load_goals

ROWS = [{"instruction": "Übersetze «café» — bitte", "output": "Kaffee ☕"}, {"instruction": "二", "output": "two"}]
ENCODINGS = {
    "utf-8": lambda t: t.encode("utf-8"),
    "utf-8 bom": lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
    "utf-16-le bom": lambda t: b"\xff\xfe" + t.encode("utf-16-le"),
    "utf-16-be bom": lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
}


def texts(crlf: bool) -> dict[str, str]:
    nl = "\r\n" if crlf else "\n"
    return {
        "rows.json": json.dumps(ROWS, ensure_ascii=False, indent=1).replace("\n", nl),
        "rows.jsonl": "".join(json.dumps(r, ensure_ascii=False) + nl for r in ROWS),
        "harmful_behaviors.csv": nl.join(["goal,target", '"Übersetze «café»",Sure', "二,ok"]) + nl,
    }


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_json_jsonl_and_csv_in_every_supported_encoding(tmp_path, encoding, crlf):
    for name, text in texts(crlf).items():
        p = tmp_path / name
        p.write_bytes(ENCODINGS[encoding](text))
        if name.endswith(".csv"):
            goals = load_goals(p)
            assert [g for _, g, _ in goals] == ["Übersetze «café»", "二"] and goals[0][2] == "Sure"
            continue
        ex = load_examples(Source(p))
        assert [(e.instruction, e.output) for e in ex] == [(r["instruction"], r["output"]) for r in ROWS]
        gz = tmp_path / (name + ".gz")  # compressed the same way the package ships its data
        gz.write_bytes(gzip.compress(p.read_bytes()))
        assert load_records(gz) == ROWS


def test_a_line_separator_inside_a_jsonl_string_is_not_a_line_end(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"instruction": "a\u2028b", "output": "c\x85d"}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    assert load_records(p) == [{"instruction": "a\u2028b", "output": "c\x85d"}]


@pytest.mark.parametrize("data, match", [
    ("Übersetze".encode("latin-1"), r"not UTF-8 text \(invalid continuation byte at byte 0"),
    (b'[{"instruction": "caf\xe9", "output": "x"}]', r"not UTF-8 text .* at byte 21"),
    ('[{"a": 1}]'.encode("utf-16-le"), r"NUL byte at byte 1.*UTF-16 without a byte-order mark"),
    (b"\xff\xfe" + b"[\x00\x00\xd8", r"byte-order mark but is not valid UTF-16"),
])
def test_other_bytes_are_a_clear_error_naming_file_and_offset(tmp_path, data, match):
    p = tmp_path / "bad.json"
    p.write_bytes(data)
    with pytest.raises(DataError, match=match) as e:
        load_records(p)
    assert str(p) in str(e.value)
    with pytest.raises(DataError, match=match):
        read_text_file(p)

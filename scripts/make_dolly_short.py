"""Write configs/data/dolly-short.json: the shipped Dolly rows (CC BY-SA 3.0) with no context, an instruction under
200 characters and a response under 300 characters — short prompts and targets, so a CPU research run spends its
time on the comparison, not on long sequences. Deterministic: the same file every time."""

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
rows = json.load(gzip.open(ROOT / "src/sdft/resources/data/dolly/dolly_train.json.gz"))
short = [r for r in rows if not r.get("input") and len(r["instruction"]) < 200 and len(r["output"]) < 300]
out = ROOT / "configs/data/dolly-short.json"
out.write_text(json.dumps(short, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
print(f"{len(short)} of {len(rows)} rows -> {out}")

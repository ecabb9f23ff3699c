"""``sdft merge``: join the folders of ``sdft distill --shard i/n`` runs into one distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sdft.distillation.distill import CONFIG, MANIFEST, ROWS, DistillResult, export, summarize
from sdft.store import RecordWriter, atomic_write_json, guard_run_folder, read_json, run_lock, scan_records


def merge_shards(shards: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> DistillResult:
    """Join the folders of ``--shard i/n`` runs into one distillation (rows, exports, manifest).

    Shards must come from the same config but for ``shard``; every shard must be complete; a row found in two
    shards is an error (the shards overlap)."""
    out = Path(out)
    folders = [Path(s) for s in shards]
    fps, manifests, rows = [], [], {}
    for f in folders:
        if not (f / CONFIG).exists() or not (f / MANIFEST).exists():
            raise ValueError(f"{f}: not a `sdft distill` folder (no {CONFIG}/{MANIFEST})")
        fp = dict(read_json(f / CONFIG)["fingerprint"])
        fp.pop("shard", None)
        fps.append(fp)
        m = read_json(f / MANIFEST)
        if m.get("status") != "complete":
            raise ValueError(f"{f}: shard is {m.get('status')}; finish it before merging")
        manifests.append(m)
        scan = scan_records(f / ROWS, repair=False)
        if scan.quarantined:
            raise ValueError(f"{f}: {len(scan.quarantined)} damaged line(s) in {ROWS} (line "
                             f"{', '.join(str(n) for n, _ in scan.quarantined[:10])}); re-run that shard's "
                             "`sdft distill` command to make those rows again, then merge")
        for r in scan.records:
            if r["index"] in rows:
                raise ValueError(f"{f}: row {r['index']} is also in another shard (overlapping shards)")
            rows[r["index"]] = r
    for f, fp in zip(folders[1:], fps[1:]):
        if fp != fps[0]:
            diff = sorted(k for k in set(fp) | set(fps[0]) if fp.get(k) != fps[0].get(k))
            raise ValueError(f"{f}: made with a different config than {folders[0]} (differs in: {', '.join(diff)})")
    with run_lock(out):
        guard_run_folder(out, fps[0], overwrite, [ROWS, MANIFEST, "distilled.json", "original.json", "dataset_info.json"])
        out.mkdir(parents=True, exist_ok=True)
        records = [rows[i] for i in sorted(rows)]
        with RecordWriter(out / ROWS) as w:
            w.write(records)
        atomic_write_json(out / CONFIG, {"fingerprint": fps[0], "config": {**manifests[0]["config"], "shard": None},
                                         "merged_from": [str(f) for f in folders]})
        export(out, records)
        manifest = {**manifests[0], "status": "complete", "counts": summarize(records),
                    "shards": [{"folder": str(f), "rows": m["counts"]["rows"], "this_session": m.get("this_session")}
                               for f, m in zip(folders, manifests)]}
        atomic_write_json(out / MANIFEST, manifest)
        return DistillResult(out, manifest["counts"], manifest)

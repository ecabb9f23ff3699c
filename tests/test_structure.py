"""The package's own import graph (standard-library ``ast``): no circles, no oversized modules, no private names
imported across modules. Imports inside functions count too: a lazy import still ties two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "sdft"
MAX_LINES = 400
# modules allowed to exceed MAX_LINES for now (each a tracked debt, never a new entry)
OVERSIZE_OK: dict[str, int] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, resolved to package modules."""
    is_pkg = path.name == "__init__.py"
    pkg = name if is_pkg else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "sdft"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "sdft":
                continue
            names = [a.name for a in node.names]
            subs = [n for n in names if f"{target}.{n}" in mods]  # `from pkg import module`
            out += [(f"{target}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest:
                out.append((target, rest))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    g = {m: set() for m in mods}
    for m, p in mods.items():
        for target, _ in _imports(m, p, mods):
            if target in mods and target != m:
                g[m].add(target)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return comps


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_a_package_init_is_never_imported_back_by_its_children():
    g = _graph()
    bad = [(m, t) for m, ts in g.items() for t in ts if m.startswith(t + ".") and t != "sdft"]
    assert bad == []


def test_no_private_names_imported_across_modules():
    mods = _modules()
    bad = [f"{m} imports {t}.{n}" for m, p in mods.items() for t, names in _imports(m, p, mods)
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert bad == []


def test_modules_stay_a_few_hundred_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES
            and n > OVERSIZE_OK.get(m, 0)}
    assert long == {}


def test_stats_is_a_leaf():
    assert _graph()["sdft.stats"] == set()

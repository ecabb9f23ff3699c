"""The README stays a front door: small, its links and the docs' links resolve, its two commands are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_BYTES = 10_240

DEMO_COMMAND = "bash scripts/setup.sh && .venv/bin/sdft experiment configs/demo-cpu.yaml"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest -q"

# Pages the README links to that other work is still writing. A link to one of these is not checked while the
# page does not exist; once it exists it is checked like any other. Remove an entry when its page lands.
PENDING: set[str] = set()

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # no links inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:, ...


def _slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_readme_is_small():
    size = README.stat().st_size
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; keep it <= {MAX_README_BYTES} (move text to docs/)"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _links(page):
        if not _relative(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if rel in PENDING and not dest.exists():
            continue
        if not dest.exists():
            broken.append(f"{target} (no {rel})")
        elif anchor and dest.suffix == ".md" and anchor not in _slugs(dest):
            broken.append(f"{target} (no heading #{anchor} in {rel})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _links(README) if _relative(t)}
    missing = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_the_two_commands_are_in_the_readme_verbatim():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert DEMO_COMMAND in lines
    assert TEST_COMMAND in lines


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [ln for ln in ci if "pytest" in ln and not ln.lstrip().startswith("#")]
    assert commands == [TEST_COMMAND], f".ci/run must run the README's test command exactly, found {commands}"


def test_the_file_tree_lists_every_module():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = text[text.index("src/sdft/\n"):]
    tree = tree[: tree.index("```")]
    pkg = ROOT / "src" / "sdft"
    missing = [str(p.relative_to(pkg)) for p in sorted(pkg.rglob("*.py"))
               if not (p.name == "__init__.py" and p.parent != pkg) and p.name not in tree]
    missing += [f"{d.name}/" for d in sorted(pkg.rglob("*")) if d.is_dir() and (d / "__init__.py").exists()
                and f"{d.name}/" not in tree]
    assert missing == [], f"README's file tree lacks: {missing}"

"""The documentation: docs/benchmarks.md is the generated page of the result JSONs, and
every relative link in the Markdown files points to a file (and heading) that exists."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.DOTALL)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def _summary():
    path = ROOT / "benchmarks" / "summary.py"
    spec = importlib.util.spec_from_file_location("bench_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_is_generated_from_the_results():
    summary = _summary()
    assert (ROOT / "docs" / "benchmarks.md").read_text() == summary.render(), (
        "docs/benchmarks.md is out of date with benchmarks/results/*.json or "
        "benchmarks/summary_template.md: run python -m benchmarks.summary")


def test_benchmarks_page_follows_a_changed_result(tmp_path):
    summary = _summary()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    path = results / "cog_write.json"
    result = json.loads(path.read_text())
    before = summary.render(results)
    result.update(ours=123.25, meets_target=False, params={"shape": [7, 9], "note": "n"})
    path.write_text(json.dumps(result))
    after = summary.render(results)
    assert after != before
    row = next(line for line in after.splitlines() if line.startswith("| cog_write |"))
    assert "| 123.2 |" in row and "| **no** |" in row
    assert "- `shape`: [7, 9]" in after
    del result["machine"]
    path.write_text(json.dumps(result))
    with pytest.raises(SystemExit, match="cog_write.json: missing keys"):
        summary.render(results)


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "benchmarks").glob("*.md"))]
    return [f for f in files if f.exists()]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    # benchmarks/summary_template.md is written for docs/ (the page it becomes)
    base = ROOT / "docs" if doc.name == "summary_template.md" else doc.parent
    broken = []
    for target in LINK.findall(CODE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s):, mailto:
        file, _, anchor = target.partition("#")
        path = (base / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_readme_is_short_and_its_contents_list_every_section():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, "README.md: keep it under 200 lines; move detail to docs/"
    sections = re.findall(r"^## (.+)$", FENCE.sub("", text), re.MULTILINE)
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    assert listed == [slug(s) for s in sections if s != "Contents"]

"""Regeneration of a published product: ``compare_manifest`` checks a regenerated
product against a published SHA256SUMS and reports every difference by file.

(Partial reruns: each Snakemake rule's params hold the hash of its config slice,
``ai4land.config.slice_hash``; docs/design.md, "Config slices and reruns".)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ai4land.errors import Ai4landError


@dataclass
class ManifestComparison:
    differ: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    same: int = 0

    @property
    def ok(self) -> bool:
        return not (self.differ or self.missing or self.extra)

    def lines(self) -> list[str]:
        out = [f"DIFFERS  {p}" for p in self.differ]
        out += [f"MISSING  {p}" for p in self.missing]
        out += [f"EXTRA    {p}" for p in self.extra]
        out.append(
            f"{self.same} identical, {len(self.differ)} differ, {len(self.missing)} missing, "
            f"{len(self.extra)} not in the manifest"
        )
        return out


def read_manifest(path: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum`` style manifest."""
    entries = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise Ai4landError(f"{path}:{number}: not a sha256sum line: {line[:80]!r}")
        entries[rel.lstrip("*")] = digest
    return entries


def compare_manifest(manifest: str | Path, root: str | Path) -> ManifestComparison:
    """Compare the files under ``root`` with a published manifest, file by file.

    Files the manifest lists are checked with :func:`ai4land.publish.run.verify_manifest`;
    files that sit beside them in the product (COGs under maps/, the Zarr store) but are
    not listed are reported as extra.
    """
    from ai4land.publish.run import verify_manifest

    manifest, root = Path(manifest), Path(root)
    if not manifest.is_file():
        raise Ai4landError(f"{manifest}: manifest not found")
    if not root.is_dir():
        raise Ai4landError(f"{root}: product directory not found")
    entries = read_manifest(manifest)
    bad = set(verify_manifest(manifest, root))
    result = ManifestComparison()
    for rel in sorted(entries):
        if rel not in bad:
            result.same += 1
        elif (root / rel).is_file():
            result.differ.append(rel)
        else:
            result.missing.append(rel)
    tops = {Path(rel).parts[0] for rel in entries}
    for top in sorted(tops):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in entries and _is_product_file(rel):
                result.extra.append(rel)
    return result


def _is_product_file(rel: str) -> bool:
    """COG layers, per-map reports and Zarr store files: what a manifest lists (not
    logs, tmp)."""
    name = Path(rel).name
    if any(part.startswith(".") and part.endswith(".tmp") for part in Path(rel).parts):
        return False
    if ".zarr/" in rel:
        return not rel.endswith(".layout.json")
    return name.endswith(".tif") or (Path(rel).parts[0] == "maps" and name.endswith(".json"))

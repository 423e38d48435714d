"""Publish the product: STAC catalog, SHA256SUMS manifest, provenance and README.

The publish directory is self-contained: it holds the products themselves (hard links
to the COGs, per-map reports and Zarr files, or copies where the file system cannot
link) under ``maps/`` and ``product/``, and every STAC href is relative inside it, so
the directory can be moved or served anywhere. The links are snapshots: every product
writer replaces files by renaming (never rewrites them in place), so a later run does
not change what was published. The catalog is validated against the STAC core and
extension JSON schemas (kept offline: :mod:`ai4land.stac_schemas`) before it is kept.

Everything written here is a pure function of the products, config, model and inputs:
no wall-clock time stamps (item datetimes come from the product year), sorted keys and
paths, so publishing twice gives identical files. The whole publish directory is built
in a temporary sibling and renamed into place.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio

import ai4land
from ai4land.config import STAGES, slice_hash, stage_config
from ai4land.encoding import class_hex
from ai4land.errors import OutputError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path
from ai4land.io.checksums import sha256_file
from ai4land.io.cog import layer_path
from ai4land.io.zarr_store import product_layers
from ai4land.publish.viewer import (
    QUICKLOOKS,
    VIEWER,
    quicklook_path,
    thumbnail_path,
    write_pictures,
)

MANIFEST = "SHA256SUMS"
MAPS = "maps"  # the publish tree: maps/<scenario>/<files>, product/<store>/
PRODUCT = "product"


def map_path(maps_dir: Path, scenario: str, year: int) -> Path:
    return Path(maps_dir) / scenario / f"ai4land_{scenario}_{year}.tif"


def _relpath(path: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def _products(config, maps_dir: Path) -> list[tuple[str, int, Path]]:
    """Every (scenario, year, COG) the config asks for; error if one is incomplete."""
    found, missing = [], []
    for scenario in config.product_scenarios:
        for year in sorted(config.scenario_years(scenario)):
            path = map_path(maps_dir, scenario, year)
            layers = product_layers(spread=config.predict.ensemble.write_layer)
            needed = [*(layer_path(path, name) for name in layers), path.with_suffix(".json")]
            if all(p.is_file() for p in needed):
                found.append((scenario, year, path))
            else:
                missing.append(next(p for p in needed if not p.is_file()))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise OutputError(f"{missing[0]}: product missing{more}; run `ai4land predict` first")
    return found


# --- the publish tree ---------------------------------------------------------------


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target``; a copy where the file system cannot link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _publish_tree(tree: Path, products: list[tuple[str, int, Path]], store: Path,
                  layers: list[str]) -> tuple[list[tuple[str, int, Path]], Path, list[Path]]:
    """Put the products into ``tree``: every layer COG and report of each map under
    ``maps/<scenario>/``, the Zarr store under ``product/``. Returns the products as
    found in the tree, the store in the tree and every file put there."""
    linked, files = [], []
    for scenario, year, cog in products:
        in_tree = map_path(tree / MAPS, scenario, year)
        for path in [*(layer_path(cog, name) for name in layers), cog.with_suffix(".json")]:
            target = in_tree.with_name(path.name)
            _link(path, target)
            files.append(target)
        linked.append((scenario, year, in_tree))
    tree_store = tree / PRODUCT / store.name
    for path in _store_files(store):
        target = tree_store / path.relative_to(store)
        _link(path, target)
        files.append(target)
    return linked, tree_store, files


# --- manifest -----------------------------------------------------------------------


def manifest_lines(files: list[Path], root: Path) -> list[str]:
    """``<sha256>  <path relative to root>`` lines, sorted by path (sha256sum -c format)."""
    entries = sorted((_relpath(f, root), f) for f in files)
    return [f"{sha256_file(f)}  {rel}" for rel, f in entries]


def _store_files(store: Path) -> list[Path]:
    return sorted(p for p in Path(store).rglob("*") if p.is_file())


def verify_manifest(path: str | Path, root: str | Path) -> list[str]:
    """Paths whose sha256 differs from the manifest (or are missing); empty when all verify."""
    bad = []
    for line in Path(path).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        target = Path(root) / rel
        if not target.is_file() or sha256_file(target) != digest:
            bad.append(rel)
    return bad


# --- provenance ---------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(ai4land.__file__).parent,
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _software() -> dict[str, str]:
    import pystac
    import torch
    import xarray
    import zarr

    return {
        "python": platform.python_version(),
        "ai4land": ai4land.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "xarray": xarray.__version__,
        "zarr": zarr.__version__,
        "pystac": pystac.__version__,
    }


def provenance(config, *, model_dir: Path, metrics_path: Path | None) -> dict:
    from ai4land.models.card import code_version

    raw = Path(config.paths.raw)
    inputs = {}
    if raw.is_dir():
        for path in sorted(p for p in raw.rglob("*") if p.is_file()):
            inputs[_relpath(path, raw)] = sha256_file(path)
    model_dir = Path(model_dir)
    model = {}
    for name in ("model.pt", "model_card.json"):
        if (model_dir / name).is_file():
            model[name.replace(".", "_") + "_sha256"] = sha256_file(model_dir / name)
    if (model_dir / "model_card.json").is_file():
        model["card"] = json.loads((model_dir / "model_card.json").read_text())
    metrics = None
    if metrics_path is not None and Path(metrics_path).is_file():
        metrics = {"path": Path(metrics_path).name, "sha256": sha256_file(metrics_path),
                   "content": json.loads(Path(metrics_path).read_text())}
    return {
        "config": config.model_dump(mode="json"),
        "config_hash": slice_hash(config, "publish"),
        # each stage's config slice hash: what its rule reruns on and its products carry
        # (a map's AI4LAND_CONFIG_HASH tag is the "predict" one)
        "stage_config_hashes": {stage: slice_hash(config, stage) for stage in STAGES},
        "code_version": code_version(),
        "git_commit": _git_commit(),
        "inputs_sha256": inputs,
        "model": model,
        "metrics": metrics,
        "software": _software(),
    }


# --- what the maps are and what they were made from ----------------------------------


def resolution_label(grid: Grid) -> str:
    """The pixel size as a reader says it: ``0.01° (~1.1 km)``, ``250 m``, ``1 km``."""
    from rasterio.crs import CRS

    crs = CRS.from_user_input(grid.crs) if grid.crs else None
    if crs is None or crs.is_geographic:
        km = grid.res * 111.32  # one degree of longitude at the equator
        approx = f"{km:.2g} km" if km >= 1 else f"{km * 1000:.2g} m"
        return f"{grid.res:g}° (~{approx} at the equator)"
    metres = grid.res * (crs.linear_units_factor[1] if crs.linear_units_factor else 1.0)
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def title(config, grid: Grid) -> str:
    """``publish.title``, or one that states the maps' real resolution."""
    if config.publish.title:
        return config.publish.title
    return f"ai4land: annual {resolution_label(grid)} land-use maps"


def input_paths(config) -> list[str]:
    """The input files the run read, in config order: the coarse historical file, the
    scenario files of ``scenarios``, the coarse static file, the fine maps (archive, or
    their file pattern) and the static layers."""
    data = config.datasets
    paths = [data.coarse.historical, *(data.coarse.scenarios[s] for s in config.scenarios)]
    if data.coarse.static:
        paths.append(data.coarse.static)
    paths.append(data.fine.archive or data.fine.pattern)
    paths += [layer.path for layer in data.static]
    return list(dict.fromkeys(paths))


def input_datasets(config) -> list[tuple[str, str, str]]:
    """(input, licence, source) of every input file the run read: the ``sources``
    entry that downloaded it (its licence and URL), else the file itself, licence not
    stated. The demo world is one synthetic input."""
    if config.demo_world:
        return [("synthetic demo world (`ai4land demo-world`, LUH2/HILDA+ file formats)",
                 "generated, no third-party data", "ai4land demo-world")]
    rows = {}
    for path in input_paths(config):
        pattern = Path(path).as_posix().replace("{year}", "*")
        matches = [(key, source) for key, source in config.sources.items()
                   if fnmatch.fnmatchcase(Path(source.path).as_posix(), pattern)]
        for key, source in matches:
            rows[key] = (f"`{key}`", source.license or f"not stated (sources.{key}.license)",
                         source.url)
        if not matches:
            rows[path] = (f"`{path}`", "not stated (no `sources` entry downloads it)",
                          "local file")
    return list(rows.values())


# --- STAC ---------------------------------------------------------------------------


def _grid_of(path: Path) -> tuple[Grid, int | None]:
    with rasterio.open(path) as src:
        crs = src.crs
        grid = Grid.from_transform(src.transform, width=src.width, height=src.height,
                                   crs=crs.to_string() if crs else "")
        return grid, (crs.to_epsg() if crs else None)


def _geometry(bounds) -> dict:
    west, south, east, north = bounds
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                [west, north], [west, south]]]}


def _file_info(asset, path: Path) -> None:
    from pystac.extensions.file import FileExtension

    ext = FileExtension.ext(asset, add_if_missing=True)
    ext.size = path.stat().st_size
    ext.checksum = "1220" + sha256_file(path)  # multihash: sha2-256, 32 bytes


def _item(config, scenario: str, year: int, cog: Path, root: Path):
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    grid, epsg = _grid_of(cog)
    report = json.loads(cog.with_suffix(".json").read_text())
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC)
    item = pystac.Item(
        id=f"ai4land_{scenario}_{year}",
        geometry=_geometry(grid.bounds),
        bbox=list(grid.bounds),
        datetime=datetime(year, 7, 1, tzinfo=UTC),
        properties={
            "start_datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ai4land:scenario": scenario,
            "ai4land:direction": int(report.get("direction", 0)),
            "ai4land:harmonized": bool(report.get("harmonized", False)),
            "ai4land:conservation_mae": report.get("conservation", {}).get("after", {})
            .get("delta_target", {}).get("mae"),
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if epsg:
        proj.epsg = epsg
    proj.shape = [grid.height, grid.width]
    proj.transform = list(tuple(grid.transform)[:6])

    assets = [
        ("lulc", cog, "Land use / land cover class (HILDA+ codes)", pystac.MediaType.COG,
         ["data"]),
        ("probability", layer_path(cog, "probability"),
         "Probability of the mapped class (value / 254)", pystac.MediaType.COG,
         ["data", "uncertainty"]),
        ("entropy", layer_path(cog, "entropy"), "Normalised class entropy (value / 254)",
         pystac.MediaType.COG, ["data", "uncertainty"]),
        ("report", cog.with_suffix(".json"), "Job report (harmonisation errors, timings)",
         pystac.MediaType.JSON, ["metadata"]),
    ]
    assets += [
        ("thumbnail", thumbnail_path(root, scenario, year),
         "Class map, small (the viewer's layer)", pystac.MediaType.PNG, ["thumbnail"]),
        ("overview", quicklook_path(root, scenario, year),
         "Quicklook: class map with legend", pystac.MediaType.PNG, ["overview"]),
    ]
    if config.predict.ensemble.write_layer:
        assets.append(("spread", layer_path(cog, "spread"),
                       "Ensemble spread: std over members of the mapped class's probability "
                       "(value / 254)", pystac.MediaType.COG, ["data", "uncertainty"]))
    for key, path, title, media, roles in assets:
        asset = pystac.Asset(href=str(path.resolve()), title=title, media_type=media,
                             roles=roles)
        item.add_asset(key, asset)
        _file_info(asset, path)
    legend = config.classes.legend
    classes = [
        Classification.create(
            value=int(code), description=name,
            name=name.replace("/", "_").replace(" ", "_"),
            color_hint=class_hex(code),
            nodata=True if code == config.classes.nodata else None,
        )
        for code, name in sorted(legend.items())
    ]
    ClassificationExtension.ext(item.assets["lulc"], add_if_missing=True).classes = classes
    # The classification schema kept offline is v1.1.0 (see ai4land/stac_schemas)
    item.stac_extensions = [CLASSIFICATION_SCHEMA if "/classification/" in uri else uri
                            for uri in item.stac_extensions]
    return item, grid


CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
# The extension schemas the catalog declares, kept offline (pystac ships the core ones).
EXTENSION_SCHEMAS = {
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json": "projection-v2.0.0.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json": "file-v2.1.0.json",
    CLASSIFICATION_SCHEMA: "classification-v1.1.0.json",
}


def validate_catalog(path: str | Path) -> int:
    """Validate the catalog at ``path``, its collections and items against the STAC
    core schemas and the schemas of the extensions they declare, without a network;
    the number of objects checked. OutputError (one line) on the first invalid one, or
    on an extension whose schema is not kept in ``ai4land/stac_schemas``."""
    import pystac
    from pystac.validation import JsonSchemaSTACValidator, validate_dict

    validator = JsonSchemaSTACValidator()
    folder = Path(__file__).parent / "stac_schemas"
    for uri, name in EXTENSION_SCHEMAS.items():
        validator.schema_cache[uri] = json.loads((folder / name).read_text())
    root = pystac.Catalog.from_file(str(path))
    hrefs = []
    for catalog, _, items in root.walk():
        hrefs += [catalog.get_self_href(), *(item.get_self_href() for item in items)]
    for href in hrefs:
        data = json.loads(Path(href).read_text())
        unknown = sorted(set(data.get("stac_extensions", [])) - set(EXTENSION_SCHEMAS))
        if unknown:
            raise OutputError(f"{href}: declares STAC extension {unknown[0]}, whose schema is "
                              "not kept in ai4land/stac_schemas; add it there")
        try:
            validate_dict(data, href=href, validator=validator)
        except pystac.errors.STACValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OutputError(f"{href}: not valid STAC ({first})") from None
    return len(hrefs)


def build_catalog(config, products: list[tuple[str, int, Path]], *, store: Path, root: Path):
    import pystac

    items, grids = [], []
    for scenario, year, cog in products:
        item, grid = _item(config, scenario, year, cog, root)
        items.append(item)
        grids.append(grid)
    west = min(g.west for g in grids)
    south = min(g.south for g in grids)
    east = max(g.east for g in grids)
    north = max(g.north for g in grids)
    years = sorted(year for _, year, _ in products)
    extent = pystac.Extent(
        pystac.SpatialExtent([[west, south, east, north]]),
        pystac.TemporalExtent([[datetime(years[0], 1, 1, tzinfo=UTC),
                                datetime(years[-1], 12, 31, 23, 59, 59, tzinfo=UTC)]]),
    )
    name = title(config, grids[0])
    catalog = pystac.Catalog(
        id=f"{config.publish.collection_id}-catalog",
        title=name,
        description=f"{name}. Run {config.run_name}, config {slice_hash(config, 'publish')[:12]}.",
    )
    collection = pystac.Collection(
        id=config.publish.collection_id,
        title=name,
        description=f"Annual land-use/land-cover class maps at {resolution_label(grids[0])} "
                    "downscaled from coarse land-use fractions with a U-Net, harmonised to "
                    "the coarse scenario by the delta method. Scenarios: "
                    + ", ".join(config.product_scenarios) + ".",
        extent=extent,
        license=config.publish.license,
        summaries=pystac.Summaries({"ai4land:scenario": list(config.product_scenarios)}),
    )
    collection.add_asset("zarr", pystac.Asset(
        href=str(Path(store).resolve()), title="All maps as one Zarr store "
        "(lulc, probability, entropy; dims scenario, year, lat, lon)",
        media_type="application/vnd+zarr", roles=["data"]))
    for key, path, asset_title, media in _collection_pictures(config, root):
        asset = pystac.Asset(href=str(path.resolve()), title=asset_title, media_type=media,
                             roles=["overview"] if key != "viewer" else ["visual"])
        collection.add_asset(key, asset)
        _file_info(asset, path)
    for item in items:
        collection.add_item(item)
    catalog.add_child(collection)
    return catalog


def _collection_pictures(config, root: Path) -> list[tuple[str, Path, str, str]]:
    """(key, path, title, media type) of the collection's pictures and the viewer."""
    pictures = [("viewer", root / VIEWER / "index.html",
                 "Web viewer (open from a static file server: python -m http.server)",
                 "text/html")]
    trajectories = root / QUICKLOOKS / "class_area_trajectories.png"
    if trajectories.is_file():
        pictures.append(("trajectories", trajectories, "Class-group area by year, every "
                         "scenario, against the LUH-mapped fractions and the target",
                         "image/png"))
    for scenario in config.product_scenarios:
        folder = root / QUICKLOOKS / scenario
        pictures += [
            (f"animation_{scenario}", folder / f"ai4land_{scenario}.gif",
             f"{scenario}: the chain, one frame a year", "image/gif"),
            (f"change_{scenario}", folder / f"ai4land_{scenario}_change.png",
             f"{scenario}: change since the anchor year, gains and losses by class",
             "image/png"),
        ]
    return pictures


# --- README -------------------------------------------------------------------------


def readme_text(config, products: list[tuple[str, int, Path]], grid: Grid) -> str:
    legend = config.classes.legend
    rows = "\n".join(
        f"| {code} | {name} | #{class_hex(code)} |"
        for code, name in sorted(legend.items())
    )
    scenarios = {}
    for scenario, year, _ in products:
        scenarios.setdefault(scenario, []).append(year)
    spans = "\n".join(f"- `{s}`: {min(y)}–{max(y)} ({len(y)} maps)"
                      for s, y in scenarios.items())
    licences = "\n".join(f"| {name} | {licence} | {url} |"
                         for name, licence, url in input_datasets(config))
    return f"""# {title(config, grid)}

Annual land-use/land-cover class maps at {resolution_label(grid)} downscaled from coarse
land-use fractions with a U-Net (ai4land), harmonised per coarse cell to the scenario
with the delta method. Dataset licence: {config.publish.license}. Config hash:
`{slice_hash(config, 'publish')}`.

## Contents
{spans}

This directory is self-contained (move or serve it as a whole; every link in the
catalog is relative):

- `maps/<scenario>/ai4land_<scenario>_<year>.tif`: Cloud-Optimized GeoTIFF, uint8 class
  codes, nodata {config.classes.nodata}, colour table, mode overviews.
- `..._probability.tif`, `..._entropy.tif`: probability of the mapped class and
  normalised entropy, uint8 = round(value × 254), nodata 255, with GDAL scale 1/254
  (QGIS, GDAL and rasterio/xarray readers that unscale show [0, 1]) (and
  `..._spread.tif`, the ensemble spread, when the run used an ensemble layer).
- `..._<year>.json`: per-map report: conservation error before/after harmonisation
  (`conservation`), `changed_pixels` (valid pixels whose class differs from the prior:
  the previous year's map going forward, the next year's going backward, the observed
  map for a chain's first year), `harmonize_reassigned_pixels` (pixels whose class
  harmonisation changed from the network's most probable class),
  `harmonize_rejections` (proposals of a pixel to a class its coarse cell had no room
  left for, while harmonising: how contested the cells' quotas were), class fractions
  and pixel counts.
- `product/<store>.zarr`: every map as `lulc`, `probability`, `entropy`
  (scenario, year, lat, lon), chunks (1, 1, 256, 256); CRS in the CF grid mapping
  `spatial_ref` (`xr.open_zarr(...).rio.crs`).
- `quicklooks/<scenario>/`: one PNG per map (class colours, legend; the STAC items'
  `overview`), `..._change.png` (change since the anchor year: where, and each class's
  gains and losses), `ai4land_<scenario>.gif` (the chain, a frame a year);
  `quicklooks/class_area_trajectories.png`: class-group areas by year against the
  LUH-mapped fractions and the harmonisation target.
- `viewer/index.html`: a web viewer (scenario, year slider, class / probability /
  entropy, a clicked cell's class fractions by year). It needs no network but does need
  a web server (browsers do not let a page read files beside it): run
  `python -m http.server` in this directory and open http://localhost:8000/viewer/.
- `catalog.json`: STAC catalog (validated against the STAC and extension schemas);
  `provenance.json`: config, code version, input and model checksums; `{MANIFEST}`:
  sha256 of every COG, report and Zarr file (verify with `sha256sum -c {MANIFEST}` in
  this directory).

## Class legend
| code | class | colour |
|---|---|---|
{rows}

## Input data and licences
| input | licence | source |
|---|---|---|
{licences}

Please cite the input datasets above and the AI4Land method (Mozaffari et al.,
arXiv 2606.11793) when using these maps.
"""


# --- entry point --------------------------------------------------------------------


def run_publish(
    config,
    *,
    maps_dir: str | Path,
    store: str | Path,
    model_dir: str | Path,
    metrics_path: str | Path | None,
    output_dir: str | Path,
) -> dict:
    """Write the publish tree (maps/, product/), catalog.json (+ collection/items),
    SHA256SUMS, provenance.json and README.md."""
    config = stage_config(config, "publish")  # reads only its slice
    import pystac

    maps_dir, store, output_dir = Path(maps_dir), Path(store), Path(output_dir)
    products = _products(config, maps_dir)
    if not products:
        raise OutputError("nothing to publish: the config asks for no maps "
                          "(set years.backward, years.forward or years.observed)")
    if not Path(store).is_dir():
        raise OutputError(f"{store}: product store not found; run `ai4land predict` first")

    layers = product_layers(spread=config.predict.ensemble.write_layer)
    with atomic_path(output_dir) as tmp:
        tmp.mkdir()
        linked, tree_store, files = _publish_tree(tmp, products, store, layers)
        write_pictures(config, linked, tmp, title(config, _grid_of(linked[0][2])[0]))
        lines = manifest_lines(files, tmp)
        catalog = build_catalog(config, linked, store=tree_store, root=tmp)
        # Trailing slash: pystac takes a root with a suffix (".tmp") for a file name.
        catalog.normalize_hrefs(str(tmp.resolve()) + "/")
        catalog.make_all_asset_hrefs_relative()
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        validate_catalog(tmp / "catalog.json")
        (tmp / MANIFEST).write_text("\n".join(lines) + "\n")
        prov = provenance(config, model_dir=Path(model_dir),
                          metrics_path=Path(metrics_path) if metrics_path else None)
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=1, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme_text(config, linked, _grid_of(linked[0][2])[0]))
    return {
        "catalog": str(output_dir / "catalog.json"),
        "items": len(products),
        "manifest_entries": len(lines),
        "config_hash": slice_hash(config, "publish"),
    }

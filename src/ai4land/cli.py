"""Command-line front-end: one sub-command per stage, each a thin call into the package.

Errors a user can cause are printed as one line (``ai4land: error: ...``) with exit
code 2; heavy imports (torch, rasterio) happen inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ai4land import __version__
from ai4land.errors import Ai4landError


def _config(args, stage: str | None = None):
    """The config files of ``args`` merged and validated; with ``stage``, only the slice
    of it that stage reads (ai4land.config.STAGES)."""
    from ai4land.config import load_config, stage_config

    config = load_config(*args.config)
    return config if stage is None else stage_config(config, stage)


def cmd_config_check(args) -> int:
    from ai4land.config import STAGES, load_config, slice_hash

    config = load_config(*args.files)
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    print(f"# config hash: {config.hash()}", file=sys.stderr)
    for stage in STAGES:  # a rule reruns when its slice hash changes
        print(f"# {stage} slice hash: {slice_hash(config, stage)}", file=sys.stderr)
    return 0


def cmd_demo_world(args) -> int:
    from ai4land.demo_world import write_demo_world

    for path in write_demo_world(_config(args, "demo_world")):
        print(path)
    return 0


def cmd_download(args) -> int:
    from ai4land.download import download_sources

    download_sources(_config(args, "download"), keys=args.only or None, repin=args.repin,
                     dry_run=args.dry_run)
    return 0


def cmd_prepare(args) -> int:
    from ai4land import prepare
    from ai4land.config import stage_config

    config = _config(args)  # each part takes its own slice below
    if args.part == "target":
        path = prepare.prepare_target(stage_config(config, "prepare_target"))
    elif args.part == "static":
        path = prepare.prepare_static(stage_config(config, "prepare_static"))
    else:
        if not args.scenario:
            raise Ai4landError("prepare coarse needs --scenario (historical or an SSP name)")
        path = prepare.prepare_coarse(stage_config(config, "prepare_coarse"),
                                      scenario=args.scenario)
    print(path)
    return 0


def cmd_split(args) -> int:
    from ai4land.samples.split import run_split

    split = run_split(_config(args, "split"), output=args.output, figure=args.figure)
    roles = {role: sum(b.role == role for b in split.blocks) for role in ("train", "val", "test")}
    print(f"{args.output}: {roles}")
    return 0


def cmd_train(args) -> int:
    from ai4land.train.loop import run_training

    run_training(_config(args, "train"), output_dir=Path(args.output),
                 split_path=Path(args.split) if args.split else None,
                 resume=not args.no_resume, restart_if_changed=args.restart_if_changed,
                 max_steps=args.max_steps)
    return 0


def cmd_evaluate(args) -> int:
    from ai4land.evaluate import run_evaluate
    from ai4land.evaluate.tables import summary

    metrics = run_evaluate(_config(args, "evaluate"), model_dir=Path(args.model),
                           split_path=Path(args.split),
                           output=Path(args.output),
                           figures_dir=Path(args.figures) if args.figures else None,
                           blocks=args.blocks)
    print(summary(metrics))
    return 0


def cmd_score(args) -> int:
    from ai4land.evaluate import score_files

    result = score_files(Path(args.prediction), Path(args.target),
                         previous=Path(args.previous) if args.previous else None)
    print(json.dumps(result, indent=2))
    return 0


def cmd_init_store(args) -> int:
    from ai4land.predict.run import init_product_store

    print(init_product_store(_config(args, "init_store"), store=Path(args.store),
                             scenario=args.scenario))
    return 0


def cmd_predict(args) -> int:
    from ai4land.predict.run import run_predict

    report = run_predict(
        _config(args, "predict"),
        scenario=args.scenario,
        year=args.year,
        model_dir=Path(args.model),
        prior_path=Path(args.prior) if args.prior else None,
        output=Path(args.output),
        store=Path(args.store),
    )
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict | list)}
                     | {"timings_s": report["timings_s"]}))
    return 0


def cmd_publish(args) -> int:
    from ai4land.publish.run import run_publish

    run_publish(_config(args, "publish"), maps_dir=Path(args.maps), store=Path(args.store),
                model_dir=Path(args.model), metrics_path=Path(args.metrics),
                output_dir=Path(args.output))
    print(args.output)
    return 0


def _emulator(args):
    from ai4land.emulator.core import Emulator

    return Emulator.from_model(Path(args.model), config=args.config or None, cube=args.cube)


def cmd_emulate(args) -> int:
    from ai4land.emulator.core import map_format, write_maps

    map_format(args.out)  # an unknown extension fails before the model loads
    emulator = _emulator(args)
    reports = []

    def years():
        years = tuple(args.years) if len(args.years) == 2 else args.years  # first, last
        for ds in emulator.iter_years(args.scenario, bbox=args.bbox, years=years,
                                      prior=args.prior):
            report = json.loads(ds.attrs["report"])
            after = report["conservation"]["after"]["delta_target"]
            reports.append({"year": report["year"], "delta_target_mae": after["mae"]})
            yield ds

    paths = write_maps(years(), args.out)
    for line in reports:
        print(json.dumps(line))
    print("\n".join(str(p) for p in paths))
    return 0


def cmd_aggregate(args) -> int:
    from ai4land.config import AggregateConfig, ClassesConfig
    from ai4land.emulator.aggregate import aggregate_maps, read_maps, write_fractions

    if args.config:
        config = _config(args)
        classes, aggregate = config.classes, config.aggregate
    else:
        classes, aggregate = ClassesConfig(), AggregateConfig()
    grid = args.grid_file or {"res": args.res, "bbox": args.extent}
    ds = aggregate_maps(read_maps(args.maps), grid, classes=classes, aggregate=aggregate)
    print(write_fractions(ds, args.out))
    return 0


def cmd_serve(args) -> int:
    from ai4land.emulator.service import Limits, serve

    limits = Limits(max_concurrent=args.max_concurrent, max_queue=args.max_queue,
                    max_upload_bytes=int(args.max_upload_mb * 2**20),
                    max_pixel_years=args.max_pixel_years,
                    async_pixel_years=args.async_pixel_years)
    serve(_emulator(args), host=args.host, port=args.port, limits=limits,
          scenario_dirs=args.scenario_dir or [])
    return 0


def cmd_torchrun(args) -> int:
    from ai4land.train.launch import launch

    module_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not module_args:
        raise Ai4landError(
            "ai4land torchrun: give the sub-command to run, e.g. -- train --config ..."
        )
    return launch(module_args, nproc=args.nproc)


def cmd_verify_manifest(args) -> int:
    from ai4land.publish.regenerate import compare_manifest

    result = compare_manifest(args.manifest, args.root)
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


def _stage(sub, name: str, func, help: str) -> argparse.ArgumentParser:
    """A stage's sub-command: it takes the config files (``--config``, repeated)."""
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--config", "-c", action="append", required=True, metavar="FILE",
                   help="config file (repeat to merge; later files win)")
    p.set_defaults(func=func)
    return p


def _add_input_stages(sub) -> None:
    """demo-world, download, prepare, split, train."""
    _stage(sub, "demo-world", cmd_demo_world, "write the synthetic demo inputs into paths.raw")

    p = _stage(sub, "download", cmd_download, "download and verify the configured sources")
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched")
    p.add_argument("--only", action="append", metavar="KEY", help="only this source key")
    p.add_argument("--repin", action="append", metavar="KEY",
                   help="forget this source's file and lock entry, download and record it "
                        "anew (only the re-pinned sources unless --only is given)")

    p = _stage(sub, "prepare", cmd_prepare, "build one part of the analysis-ready cube")
    p.add_argument("part", choices=["target", "static", "coarse"])
    p.add_argument("--scenario", help="coarse scenario (with part 'coarse')")

    p = _stage(sub, "split", cmd_split, "spatial blocks + stratified test blocks + temporal split")
    p.add_argument("--output", required=True, help="split JSON")
    p.add_argument("--figure", required=True, help="split map PNG")

    p = _stage(sub, "train", cmd_train, "train the U-Net (one process, or under `ai4land "
               "torchrun` for DDP; `python -m ai4land.train` takes the same flags)")
    p.add_argument("--split", help="split JSON (default: split/split.json under paths.results)")
    p.add_argument("--output", required=True, help="model directory")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--restart-if-changed", action="store_true",
                   help="a checkpoint of other training settings is moved to "
                        "checkpoints/stale-<hash>/ and training starts afresh (default: "
                        "refuse it); the workflow passes this")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimiser steps in all, writing a checkpoint "
                        "(a later run resumes there)")


def _add_output_stages(sub) -> None:
    """evaluate, score, init-store, predict, publish."""
    p = _stage(sub, "evaluate", cmd_evaluate, "score the harmonised chains of the model and "
               "the baselines on test blocks and years")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--split", required=True)
    p.add_argument("--output", required=True,
                   help="metrics JSON (CSV tables are written beside it)")
    p.add_argument("--figures", help="figure directory (default: figures/ beside --output)")
    p.add_argument("--blocks", choices=("test", "val"), default="test",
                   help="the split's blocks to score: test (the published quality) or val "
                        "(to choose settings without looking at the test blocks)")

    p = sub.add_parser("score", help="score a predicted map against a target map on one grid")
    p.add_argument("prediction")
    p.add_argument("target")
    p.add_argument("--previous", help="previous year's map: adds figure of merit on change")
    p.set_defaults(func=cmd_score)

    p = _stage(sub, "init-store", cmd_init_store,
               "create (or grow) the product Zarr store for one scenario chain")
    p.add_argument("--store", required=True)
    p.add_argument("--scenario", required=True, help="the chain this marker is for")

    p = _stage(sub, "predict", cmd_predict, "predict one (scenario, year) map")
    p.add_argument("--scenario", required=True)
    p.add_argument("--year", required=True, type=int)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--prior", help="prior map COG (default: the observed anchor map)")
    p.add_argument("--output", required=True, help="class map COG")
    p.add_argument("--store", required=True, help="product Zarr store")

    p = _stage(sub, "publish", cmd_publish, "write STAC catalog, checksums and provenance")
    p.add_argument("--maps", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--output", required=True)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (model.pt + model_card.json)")
    p.add_argument("--config", "-c", action="append", metavar="FILE",
                   help="config file (default: the one in the model card)")
    p.add_argument("--cube", help="the model's prepared cube (default: paths.cube of the "
                                  "config, beside the model)")


def _add_emulator_commands(sub) -> None:
    """emulate, serve, aggregate."""
    p = sub.add_parser("emulate", help="maps of any LUH-format scenario, region and years",
                       description="Predict the maps of a scenario (LUH-format coarse "
                                   "fractions) over a bbox for a range of years, harmonised "
                                   "as the product; written as NetCDF (.nc), Zarr (.zarr) or "
                                   "a COG per year (.tif: X_<year>.tif and its layers).")
    _model_options(p)
    p.add_argument("--scenario", required=True, help="LUH-format NetCDF file or Zarr store")
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                   help="region (default: the model's whole extent)")
    p.add_argument("--years", nargs="+", type=int, required=True, metavar="YEAR",
                   help="first and last year (inclusive), or one year")
    p.add_argument("--prior", help="first prior map (GeoTIFF on the model's fine grid; "
                                   "default: the observed map the chain starts from)")
    p.add_argument("--out", required=True, help="output: PATH.nc, PATH.zarr or PATH.tif")
    p.set_defaults(func=cmd_emulate)

    p = sub.add_parser("serve", help="serve the emulator over HTTP (FastAPI + uvicorn)",
                       description="An HTTP service around a warm model: POST /emulate for "
                                   "maps or fractions, /docs for the OpenAPI description.")
    _model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--scenario-dir", action="append", metavar="DIR",
                   help="a directory whose scenario files requests may name (repeat); "
                        "without one, scenarios must be uploaded")
    p.add_argument("--max-concurrent", type=int, default=1, help="predictions run at once")
    p.add_argument("--max-queue", type=int, default=4,
                   help="requests waiting for a slot; more are answered 503")
    p.add_argument("--max-upload-mb", type=float, default=256.0, help="request body limit")
    p.add_argument("--max-pixel-years", type=int, default=50_000_000,
                   help="largest region (pixels x years) a request may ask for")
    p.add_argument("--async-pixel-years", type=int, default=10_000_000,
                   help="larger requests get a job id (202) instead of waiting")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("aggregate", help="fine maps to class and PFT fractions on a model grid",
                       description="Aggregate fine class maps (emulate's NetCDF/Zarr, or class "
                                   "COGs) to fractions on a target grid, area-weighted, as CF "
                                   "NetCDF in LUH layout: one variable per class and per plant "
                                   "functional type (aggregate.crosswalk of the config).")
    p.add_argument("maps", nargs="+", help="maps: .nc/.zarr written by emulate, or class COGs")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--res", type=float, help="regular lat/lon grid of RES degrees")
    target.add_argument("--grid-file", help="a NetCDF file whose lat/lon grid to use")
    p.add_argument("--extent", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                   help="extent of the --res grid (default: the maps' extent, snapped out)")
    p.add_argument("--config", "-c", action="append", metavar="FILE",
                   help="config with classes and the aggregate crosswalk (default: built-in)")
    p.add_argument("--out", required=True, help="output NetCDF (.nc)")
    p.set_defaults(func=cmd_aggregate)


def _add_tool_commands(sub) -> None:
    """torchrun, verify-manifest."""
    p = sub.add_parser(
        "torchrun", help="run a sub-command under torchrun (multi-node inside Slurm)"
    )
    p.add_argument("--nproc", type=int, required=True, help="processes per node (train.nproc)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- SUB-COMMAND [ARGS...]")
    p.set_defaults(func=cmd_torchrun)

    p = sub.add_parser("verify-manifest",
                       help="compare a product with a published SHA256SUMS, file by file")
    p.add_argument("manifest", help="published SHA256SUMS")
    p.add_argument("--root", required=True, help="directory the manifest paths are relative to")
    p.set_defaults(func=cmd_verify_manifest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai4land", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ai4land {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = sub.add_parser("config", help="inspect configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate and print the resolved config")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_config_check)

    _add_input_stages(sub)
    _add_output_stages(sub)
    _add_emulator_commands(sub)
    _add_tool_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # rasterio echoes each GDAL error at INFO; our errors name them
        logging.getLogger("rasterio").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except Ai4landError as exc:
        print(f"ai4land: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ai4land: interrupted", file=sys.stderr)
        return 130

"""The configuration schema: one pydantic model, defaults, and one-line errors.

Every dataset is described here, not in code: LUH2 and HILDA+ are just the values of
``config/config.yaml``; a user's own data needs nothing but another config.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ai4land.errors import ConfigError

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
YearRange = tuple[int, int]

LUH2_FRACTIONS = [
    "primf", "primn", "secdf", "secdn", "urban", "c3ann", "c4ann",
    "c3per", "c4per", "c3nfx", "pastr", "range",
]  # fmt: skip


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassesConfig(_Section):
    """The class legend: codes of the fine maps and which of them the model predicts."""

    legend: dict[int, str] = {
        0: "ocean",
        11: "urban",
        22: "cropland",
        33: "pasture/rangeland",
        44: "forest",
        55: "unmanaged grass/shrubland",
        66: "sparse/no vegetation",
        77: "water",
        99: "no data",
    }
    predicted: list[int] = [11, 22, 33, 44, 55, 66, 77]
    ocean: int = 0
    nodata: int = 99

    @model_validator(mode="after")
    def _codes_known(self) -> ClassesConfig:
        for code in [*self.predicted, self.ocean, self.nodata]:
            if code not in self.legend:
                raise ValueError(f"class code {code} is not in classes.legend")
            if not 0 <= code <= 255:
                raise ValueError(f"class code {code} does not fit in uint8")
        if len(set(self.predicted)) != len(self.predicted):
            raise ValueError("classes.predicted lists a code twice")
        return self


class CoarseGroup(_Section):
    """Coarse variables whose summed fraction corresponds to one or more fine classes."""

    variables: list[str]
    classes: list[int]


class CoarseSource(_Section):
    """Coarse land-use fractions (LUH2 ``states.nc`` and its scenario files)."""

    historical: str
    scenarios: dict[str, str] = {}
    variables: list[str] = LUH2_FRACTIONS
    # LUH2 spells the fill attribute `_Fillvalue`, which netCDF readers ignore.
    fill_attributes: list[str] = ["_FillValue", "_Fillvalue", "missing_value"]
    fill_threshold: float = 1e19
    static: str | None = None
    water_variable: str | None = "icwtr"
    groups: dict[str, CoarseGroup] = {
        "urban": CoarseGroup(variables=["urban"], classes=[11]),
        "cropland": CoarseGroup(
            variables=["c3ann", "c4ann", "c3per", "c4per", "c3nfx"], classes=[22]
        ),
        "pasture": CoarseGroup(variables=["pastr", "range"], classes=[33]),
        "forest": CoarseGroup(variables=["primf", "secdf"], classes=[44]),
        "natural_nonforest": CoarseGroup(variables=["primn", "secdn"], classes=[55, 66]),
        "water": CoarseGroup(variables=["icwtr"], classes=[77]),
    }
    fraction_tolerance: float = 1e-3
    # How to read a time axis whose file declares no `units`: one string for every coarse
    # file, or one per scenario ("historical", "ssp126", ...). E.g. "years since
    # 2015-01-01", "days since 1850-01-01" or "year" (the values are calendar years).
    # Without it such an axis is an error. Units declared in a file win.
    time_units: str | dict[str, str] | None = None

    def time_units_of(self, scenario: str) -> str | None:
        """The configured units of ``scenario``'s time axis (None: not configured)."""
        if isinstance(self.time_units, dict):
            return self.time_units.get(scenario)
        return self.time_units

    @model_validator(mode="after")
    def _groups_use_known_variables(self) -> CoarseSource:
        known = [*self.variables, *([self.water_variable] if self.water_variable else [])]
        for name, group in self.groups.items():
            unknown = [v for v in group.variables if v not in known]
            if unknown:
                raise ValueError(
                    f"groups.{name} sums {unknown}, which are neither in variables nor the "
                    f"water_variable (known: {known})"
                )
        return self


class FineSource(_Section):
    """Fine categorical maps, one per year: HILDA+ GeoTIFFs inside a zip, or plain files."""

    archive: str | None = None
    pattern: str
    years: YearRange
    code_mapping: dict[int, int] = {c: c for c in (0, 11, 22, 33, 44, 55, 66, 77, 99)}


class StaticLayer(_Section):
    name: str
    path: str
    variable: str | None = None
    kind: Literal["continuous", "categorical"] = "continuous"
    derive_slope: bool = False


class DatasetsConfig(_Section):
    coarse: CoarseSource
    fine: FineSource
    static: list[StaticLayer] = []


class Source(_Section):
    """One file to download: where from, where to, and how to verify it."""

    url: str
    path: str
    sha256: str | None = None
    size: int | None = None
    license: str | None = None
    extract_members: str | None = None


class DownloadConfig(_Section):
    """How ``ai4land download`` talks to servers (docs/usage.md, "Downloads")."""

    # Seconds without a byte before a connection counts as stalled; the download then
    # resumes (HTTP Range) from the bytes already received.
    timeout: PositiveFloat = 60.0
    # Attempts in a row without progress before giving up (a run resumes the .part).
    retries: NonNegativeInt = 5
    backoff: PositiveFloat = 1.0  # seconds before the first retry, doubling after each


class YearsConfig(_Section):
    train: YearRange
    test: YearRange
    backward: YearRange | None = None
    forward: YearRange | None = None
    # Observed years whose maps the model also predicts, harmonised to that year's observed
    # map (its class shares per coarse cell), published under scenario 'historical'.
    observed: YearRange | None = None

    @model_validator(mode="after")
    def _ordered(self) -> YearsConfig:
        for name in ("train", "test", "backward", "forward", "observed"):
            span = getattr(self, name)
            if span is not None and span[0] > span[1]:
                raise ValueError(f"{name} must be [first, last] with first <= last, got {span}")
        return self


class RegionConfig(_Section):
    bbox: tuple[float, float, float, float] | None = None

    @model_validator(mode="after")
    def _valid_bbox(self) -> RegionConfig:
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (west < east and south < north):
                raise ValueError(f"bbox must be [west, south, east, north], got {list(self.bbox)}")
        return self


class SplitConfig(_Section):
    block_size: PositiveInt = 100
    n_test_blocks: PositiveInt = 4
    n_val_blocks: NonNegativeInt = 2
    buffer_blocks: NonNegativeInt = 1
    min_test_land_fraction: Fraction = 0.5  # test blocks are mostly land


class PriorMaskConfig(_Section):
    """How much of the autoregressive prior is hidden in training."""

    p_none: Fraction = 0.15
    max_fraction: Fraction = 0.5
    block_size: PositiveInt = 16


InputGroup = Literal["coarse", "static", "prior"]


class TrainConfig(_Section):
    """U-Net training (``ai4land train`` under torchrun).

    Validation windows are the largest tile (a multiple of ``2**depth``, at most
    ``tile_size``) that fits inside the validation blocks with ``min_land_fraction``
    land; it is logged and written to the model card as ``val_tile_size``.
    """

    nproc: PositiveInt = 1
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: PositiveInt = 4
    steps_per_epoch: PositiveInt = 60
    batch_size: PositiveInt = 8
    tile_size: PositiveInt = 64
    lr: PositiveFloat = 2e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    base_channels: PositiveInt = 16
    depth: PositiveInt = 3
    norm: Literal["batch", "group"] = "batch"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    grad_clip: PositiveFloat = 1.0
    checkpoint_every: PositiveInt = 50
    val_batches: PositiveInt = 8
    early_stopping_patience: PositiveInt = 5
    amp: bool = True
    # Training and validation windows need more than this share of land pixels.
    min_land_fraction: Fraction = 0.1
    # Share of each epoch's samples drawn in proportion to the prior -> target change of
    # their (tile-sized block, year pair) instead of uniformly; 0 = uniform sampling.
    change_balanced: Fraction = 0.0
    # false: no sample has a prior (single-year data, or a model without the prior).
    prior: bool = True
    # Demand channels (issue 19): per coarse group, the cell's harmonisation target minus
    # the prior map's group fractions (the change the allocation will make), upsampled
    # like the coarse channels (ai4land.predict.demand). Needs the prior; the model card
    # lists them (demand:<group>), so models without them still load.
    demand: bool = False
    # Loss weight of the pixels whose class differs from the prior's (1: plain mean).
    change_weight: PositiveFloat = 1.0
    # Smooth coarse channels (issue 19, single-year data): per coarse group, its fractions
    # interpolated bilinearly between the centres of the pixel's cell and its neighbours
    # (ai4land.samples.smooth), so the model sees where inside a cell a group lies. The
    # model card lists them (smooth:<group>), so models without them still load.
    smooth_coarse: bool = False
    # A persistence path past the convolutions (issue 19): each class's logit gets a
    # learned gain times the prior's one-hot channel of that class (models.unet), so the
    # network starts from persistence for every class and learns the change. Only for a
    # model with the prior (``uses_prior``); the card records it (architecture.prior_skip),
    # so models without it load as before.
    prior_skip: bool = True
    # Input groups zeroed inside the model (ablation); the channel layout is unchanged.
    drop_inputs: list[InputGroup] = []
    # Input group -> probability that a training sample (not validation) has that group's
    # channels zeroed, e.g. {static: 0.5}; drawn per sample from (seed, epoch, index).
    input_dropout: dict[InputGroup, Annotated[float, Field(ge=0, lt=1)]] = {}
    # Turn/mirror each training sample by a random symmetry of the square (8 in all).
    augment: bool = False
    # Write TensorBoard scalars beside metrics.csv (only if `tensorboard` is installed).
    tensorboard: bool = False
    # Batches loaded ahead by a background thread while the model computes (counting
    # the one being loaded); 0 loads in the training loop.
    prefetch: NonNegativeInt = 2
    # Loader processes slicing raw windows (0: the prefetch thread slices them). On 2
    # CPU cores the thread keeps ahead of the model; give GPU ranks a few each.
    num_workers: NonNegativeInt = 0
    # Directory for memory-mapped copies of the training years (node-local scratch for
    # a production cube, which does not fit in memory); null keeps them in memory.
    cache_dir: str | None = None
    prior_mask: PriorMaskConfig = PriorMaskConfig()

    @model_validator(mode="after")
    def _inputs_consistent(self) -> TrainConfig:
        if len(set(self.drop_inputs)) != len(self.drop_inputs):
            raise ValueError(f"drop_inputs lists a group twice: {self.drop_inputs}")
        if len(self.dropped_inputs) == 3:
            raise ValueError("drop_inputs drops every input group; keep at least one")
        both = sorted(set(self.input_dropout) & set(self.dropped_inputs))
        if both:
            raise ValueError(f"input_dropout lists {both}, which drop_inputs (or prior: false) "
                             "already zeroes; list a group in one of them only")
        if self.demand and not self.uses_prior:
            raise ValueError("demand channels are the change against the prior; they need "
                             "the prior (prior true, 'prior' not in drop_inputs)")
        if self.change_balanced > 0 and not self.uses_prior:
            raise ValueError("change_balanced weights samples by prior -> target change; "
                             "it needs the prior (prior true, 'prior' not in drop_inputs)")
        return self

    @property
    def uses_prior(self) -> bool:
        return self.prior and "prior" not in self.drop_inputs

    @property
    def dropped_inputs(self) -> list[str]:
        """Input groups the model zeroes: ``drop_inputs`` plus 'prior' when it is off."""
        return sorted(set(self.drop_inputs) | (set() if self.prior else {"prior"}))


class EnsembleConfig(_Section):
    """Optional prediction ensemble whose spread is reported (and written as a layer)."""

    kind: Literal["none", "tta", "mc_dropout"] = "none"
    members: PositiveInt = 1
    write_layer: bool = False

    @model_validator(mode="after")
    def _members_fit(self) -> EnsembleConfig:
        if self.kind != "none" and self.members < 2:
            raise ValueError(f"ensemble.members must be >= 2 for {self.kind}, got {self.members}")
        if self.kind == "tta" and self.members > 4:
            raise ValueError(f"ensemble.members must be <= 4 for tta (flips), got {self.members}")
        if self.kind == "none" and self.write_layer:
            raise ValueError("ensemble.write_layer needs ensemble.kind tta or mc_dropout")
        return self


class PredictConfig(_Section):
    tile_size: PositiveInt = 128
    overlap: NonNegativeInt = 32
    batch_size: PositiveInt = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    harmonize: bool = True
    # Years over which the delta method's anchor offset fades to 0 (null: never).
    harmonize_decay_years: PositiveInt | None = None
    # How a year with a prior map is harmonised: "change" keeps the prior and converts
    # only each cell's net change per class (the model's probabilities choose the
    # pixels; harmonize.allocate_change), "full" re-allocates every pixel by the
    # model's probabilities (harmonize.harmonize). Without a prior: always "full".
    allocation: Literal["change", "full"] = "change"
    # "change": two pixels swap classes beyond the net change only where each one's
    # probability of the other's class exceeds that of its own by more than this
    # (1 = never).
    swap_margin: float = Field(0.5, ge=0, le=1)
    # "change": the pixels that convert are ranked by the model's probabilities averaged
    # over this many pixels a side inside their coarse cell (1 = each pixel's own).
    change_smoothing: PositiveInt = 3
    # "change", patch-aware allocation (CLUE/Dinamica-style, harmonize.allocate_change):
    # pixels convert one at a time, a pixel's score for a class raised by
    # change_patch_bonus x (its 8 neighbours inside the coarse cell holding the class,
    # in the prior or converted to it) / 8 plus change_cluster_bonus x (its neighbours
    # inside the cell converted this year, to any class) / 8, so a year's changes grow
    # patches instead of scattering; both 0: the scores alone. Default 1 / 0 (two demo
    # worlds: isolated changes 0.54 -> 0.32 and 0.60 -> 0.38 of the changes, period FoM
    # +0.003 and -0.010; a cluster bonus of 3 gives 0.15 / 0.18 for FoM -0.04; the
    # observed change's own isolated share is 0.12-0.14: docs/quality.md).
    change_patch_bonus: float = Field(0.0, ge=0)
    change_cluster_bonus: float = Field(1.0, ge=0)
    # Without a prior map ("full" allocation: single-year data), a cell's group counts go
    # to the pixels of highest score (1 - w) x the model's group probability + w x the
    # cell targets interpolated bilinearly between cell centres (the neighbouring cells
    # tell where inside a cell a group lies). Not used where a chain continues a prior
    # map ("change"). 0.75 was chosen on the validation blocks of two demo worlds (0, 0.25,
    # 0.5, 0.75, 1 tried; 1 fell to the smooth_coarse baseline on one): docs/quality.md.
    smooth_weight: float = Field(0.75, ge=0, le=1)
    ensemble: EnsembleConfig = EnsembleConfig()
    # DEFLATE level of the class COG: 6 writes a class map ~6x faster than 9, ~15 % larger
    compress_level: int = Field(6, ge=1, le=9)
    # ... and of the probability/entropy COGs, near-noise that DEFLATE barely shrinks:
    # level 1 takes ~30 % less time than 6 for ~1 % more bytes (trained model, 1800^2)
    uncertainty_compress_level: int = Field(1, ge=1, le=9)

    @model_validator(mode="after")
    def _overlap_fits(self) -> PredictConfig:
        if self.overlap * 2 >= self.tile_size:
            raise ValueError(
                f"overlap must be < tile_size / 2, got {self.overlap} with tile {self.tile_size}"
            )
        return self


class EvaluateConfig(_Section):
    """Sizes of the evaluation's baselines, figures and bootstrap intervals."""

    gbm_samples: PositiveInt = 100_000  # training-block pixels for gradient boosting
    gbm_years: PositiveInt = 10  # training years they are drawn from
    gbm_max_iter: PositiveInt = 100
    calibration_bins: PositiveInt = 10
    figure_tiles: PositiveInt = 3
    bootstrap_replicates: PositiveInt = 1000  # block-bootstrap replicates per interval
    confidence_level: Annotated[float, Field(gt=0, lt=1)] = 0.95  # of the intervals
    # Side of the neighbourhood (pixels) whose class densities choose the converting
    # pixels of the neighbourhood-density allocation baseline (LandScaleR's kernel).
    density_kernel: PositiveInt = 5


class PublishConfig(_Section):
    # null: "ai4land: annual <the fine grid's resolution> land-use maps"
    title: str | None = None
    license: str = "CC-BY-4.0"
    collection_id: str = "ai4land"


# The default plant-functional-type crosswalk of ``ai4land aggregate``: the share of each
# class's area given to each PFT. An illustrative, climate-blind table in the spirit of
# land-cover -> PFT crosswalks (e.g. Poulter et al. 2015, GMD 8, 2315); a land model
# replaces it with its own PFTs and shares (aggregate.crosswalk in the config).
DEFAULT_CROSSWALK: dict[int, dict[str, float]] = {
    11: {"urban": 0.75, "grass": 0.15, "bare": 0.10},
    22: {"crop": 1.0},
    33: {"grass": 0.85, "shrub": 0.10, "bare": 0.05},
    44: {"tree": 0.85, "shrub": 0.05, "grass": 0.10},
    55: {"grass": 0.50, "shrub": 0.40, "tree": 0.05, "bare": 0.05},
    66: {"bare": 0.80, "grass": 0.10, "shrub": 0.10},
    77: {"water": 1.0},
}


class AggregateConfig(_Section):
    """Fine maps to fractions on an Earth-system model's grid (``ai4land aggregate``): one
    variable per class (named by ``class_names``, ``class_<code>`` if unnamed) and per plant
    functional type (``pft_<name>``, shares of each class's area from ``crosswalk``; a
    class without a row adds to no PFT)."""

    class_names: dict[int, str] = {11: "urban", 22: "cropland", 33: "pasture", 44: "forest",
                                   55: "grass_shrub", 66: "sparse", 77: "water"}
    crosswalk: dict[int, dict[str, Annotated[float, Field(ge=0, le=1)]]] = DEFAULT_CROSSWALK

    @model_validator(mode="after")
    def _valid_types(self) -> AggregateConfig:
        for code, shares in self.crosswalk.items():
            total = sum(shares.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"crosswalk of class {code} sums to {total:g}; the PFT shares "
                                 "of a class must sum to 1")
        names = [*self.class_names.values(), *(f"pft_{p}" for p in self.pfts)]
        for name in names:
            if not name.isidentifier():
                raise ValueError(f"type name {name!r} is not a valid variable name")
        return self

    @property
    def pfts(self) -> list[str]:
        """The PFTs of the crosswalk, in order of first appearance."""
        return list(dict.fromkeys(p for shares in self.crosswalk.values() for p in shares))


class DemoWorldConfig(_Section):
    """Shape of the synthetic world written by ``ai4land demo-world``."""

    bbox: tuple[float, float, float, float] = (4.0, 42.0, 10.0, 48.0)
    fine_res: PositiveFloat = 0.01
    coarse_res: PositiveFloat = 0.25
    historical_years: YearRange = (1950, 2015)
    future_years: YearRange = (2015, 2100)


class PathsConfig(_Section):
    raw: str = "resources/raw"
    cube: str = "resources/cube"
    results: str = "results"


class Config(_Section):
    run_name: str = "ai4land"
    seed: int = 42
    demo_world: bool = False
    demo: DemoWorldConfig = DemoWorldConfig()
    paths: PathsConfig = PathsConfig()
    sources: dict[str, Source] = {}
    download: DownloadConfig = DownloadConfig()
    region: RegionConfig = RegionConfig()
    classes: ClassesConfig = ClassesConfig()
    datasets: DatasetsConfig
    years: YearsConfig
    scenarios: list[str] = []
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    publish: PublishConfig = PublishConfig()
    aggregate: AggregateConfig = AggregateConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        missing = [s for s in self.scenarios if s not in self.datasets.coarse.scenarios]
        if missing:
            raise ValueError(
                f"scenarios {missing} have no file under datasets.coarse.scenarios"
            )
        first, last = self.datasets.fine.years
        for name in ("train", "test"):
            lo, hi = getattr(self.years, name)
            if lo < first or hi > last:
                raise ValueError(
                    f"years.{name} {[lo, hi]} lies outside the observed years {[first, last]}"
                )
        if self.years.backward and self.years.backward[1] >= first:
            raise ValueError(f"years.backward must end before the first observed year {first}")
        if self.years.forward and self.years.forward[0] <= last:
            raise ValueError(f"years.forward must start after the last observed year {last}")
        if self.years.observed and (self.years.observed[0] < first
                                    or self.years.observed[1] > last):
            raise ValueError(f"years.observed {list(self.years.observed)} lies outside the "
                             f"observed years {[first, last]}")
        if self.years.forward and not self.scenarios:
            raise ValueError("years.forward needs at least one entry in scenarios")
        group_classes = [c for g in self.datasets.coarse.groups.values() for c in g.classes]
        unknown = sorted(set(group_classes) - set(self.classes.predicted))
        if unknown:
            raise ValueError(f"datasets.coarse.groups map to unpredicted classes {unknown}")
        return self

    # --- derived views -------------------------------------------------------------

    @property
    def observed_years(self) -> list[int]:
        first, last = self.datasets.fine.years
        return list(range(first, last + 1))

    @property
    def backward_years(self) -> list[int]:
        """Backward chain, in the order it is computed (latest year first)."""
        if self.years.backward is None:
            return []
        first, last = self.years.backward
        return list(range(last, first - 1, -1))

    @property
    def forward_years(self) -> list[int]:
        if self.years.forward is None:
            return []
        first, last = self.years.forward
        return list(range(first, last + 1))

    @property
    def observed_product_years(self) -> list[int]:
        """Observed years whose harmonised maps the product holds (``years.observed``)."""
        if self.years.observed is None:
            return []
        first, last = self.years.observed
        return list(range(first, last + 1))

    @property
    def product_scenarios(self) -> list[str]:
        """Scenario axis of the product: 'historical' (backward chain and observed years)
        then each SSP."""
        historical = self.backward_years or self.observed_product_years
        return (["historical"] if historical else []) + list(self.scenarios)

    @property
    def product_years(self) -> list[int]:
        return sorted(self.backward_years) + self.observed_product_years + self.forward_years

    def chain_years(self, scenario: str) -> list[int]:
        return self.backward_years if scenario == "historical" else self.forward_years

    def scenario_years(self, scenario: str) -> list[int]:
        """Every year of ``scenario`` in the product: its chain, then for 'historical' the
        observed years (predicted on their own, not chained)."""
        observed = self.observed_product_years if scenario == "historical" else []
        return self.chain_years(scenario) + observed

    def hash(self) -> str:
        """A stable hash of the resolved config, used in provenance and model cards."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if error["type"] == "missing":
        return f"{location} is required"
    if error["type"] == "extra_forbidden":
        return f"{location} is not a known setting (check the spelling)"
    if "input" in error and error["type"] not in ("model_type",):
        shown = error["input"]
        if isinstance(shown, dict | list):
            return f"{location}: {message}" if location else message
        return f"{location} {message.lower()}, got {shown!r}" if location else message
    return f"{location}: {message}" if location else message


def parse_config(data: dict, *, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {_describe(first)}{suffix}") from None


def deep_update(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_files(paths: list[str | Path]) -> dict:
    """Merge YAML files left to right (later files override earlier ones)."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of settings")
        merged = deep_update(merged, data)
    return merged


def load_config(*paths: str | Path) -> Config:
    """Read, merge and validate one or more config files."""
    if not paths:
        raise ConfigError("no config file given")
    return parse_config(read_config_files(list(paths)), source=", ".join(map(str, paths)))


# --- config slices: what each stage reads --------------------------------------------
#
# Each workflow stage (a Snakemake rule and its `ai4land` command) declares here, once,
# the config entries it reads. The declaration is the single source of
#   * the stage's view of the config (`stage_config`): reading any other entry raises
#     UndeclaredConfigError, so the declaration cannot fall behind the code unnoticed;
#   * the rule's rerun trigger: its Snakemake `config_hash` param is `slice_hash`;
#   * the provenance hash the stage writes into its products (COG tags, map reports,
#     model card): the same `slice_hash`.
# So a config edit reruns exactly the stages whose slice holds the edited entry, and a
# product's provenance hash changes exactly when the product is regenerated.
# docs/design.md ("Config slices and reruns") explains; docs/architecture.md says where
# to add a key.


class UndeclaredConfigError(AttributeError):
    """A stage read a config entry its slice does not declare (a programming error)."""


@dataclass(frozen=True)
class StageSlice:
    """The config entries one stage reads, as dotted paths (``"predict"`` is the whole
    section, ``"predict.tile_size"`` one entry; ``"*"`` the whole config).

    ``reads`` are hashed: editing one reruns the stage. ``unhashed`` maps entries the stage
    reads without them deciding its products to the reason (where files are, the list of
    SSPs: those change which jobs exist, not what a job writes). ``per_item`` names a
    mapping with one rule per entry (``sources``: one download rule per source); that
    rule's hash holds only its own entry.
    """

    reads: tuple[str, ...]
    unhashed: Mapping[str, str] = field(default_factory=dict)
    per_item: str | None = None

    def readable(self, dotted: str) -> bool:
        """Whether ``dotted`` lies inside a declared entry (hashed or not)."""
        return any(_covers(key, dotted) for key in (*self.reads, *self.unhashed))

    def hashes(self, dotted: str) -> bool:
        """Whether editing the entry at ``dotted`` changes this stage's hash."""
        if any(_covers(key, dotted) for key in self.unhashed if key != "*"):
            return False
        return any(_covers(key, dotted) or _covers(dotted, key) for key in self.reads)


def _covers(key: str, dotted: str) -> bool:
    """Whether the entry ``key`` holds ``dotted`` (itself or a part of it)."""
    return key == "*" or dotted == key or dotted.startswith(key + ".")


_WHERE = "where files are, not what they hold: another path is another output"
_SSPS = ("the list of SSPs: a new SSP adds its own jobs and leaves the other "
         "scenarios' jobs alone")
_CUBE = ("datasets.coarse.variables", "datasets.coarse.water_variable")  # Cube.from_config

STAGES: dict[str, StageSlice] = {
    "demo_world": StageSlice(reads=("seed", "demo", "datasets")),
    "download": StageSlice(
        reads=("sources",), per_item="sources",
        unhashed={"download": "how to fetch (timeouts, retries), not what: files are "
                              "verified by size and sha256",
                  "datasets": "what a download is checked to hold; a failed check fails "
                              "the job",
                  "paths.raw": _WHERE}),
    "prepare_target": StageSlice(
        reads=("datasets.fine", "datasets.coarse.historical", "region", "classes.legend",
               "classes.ocean", "classes.nodata"),
        unhashed={"paths.cube": _WHERE}),
    "prepare_static": StageSlice(
        reads=("datasets.static", "datasets.coarse.water_variable", "datasets.coarse.groups",
               "classes.ocean", "classes.nodata"),
        unhashed={"paths.cube": _WHERE}),
    "prepare_coarse": StageSlice(
        reads=("datasets.coarse", "datasets.fine.years", "years.backward", "years.forward",
               "years.observed", "classes.ocean", "classes.nodata"),
        unhashed={"datasets.coarse.scenarios": _SSPS + "; a scenario's file is its input",
                  "paths.cube": _WHERE}),
    "split": StageSlice(
        reads=("seed", "split", "years.train", "years.test", "classes.predicted", *_CUBE),
        unhashed={"paths.cube": _WHERE}),
    "train": StageSlice(
        reads=("seed", "train", "classes", "years", "datasets.coarse.groups", *_CUBE),
        unhashed={"paths.cube": _WHERE, "paths.results": _WHERE}),
    "evaluate": StageSlice(
        reads=("seed", "evaluate", "classes", "datasets.coarse.groups", *_CUBE,
               "predict.tile_size", "predict.overlap", "predict.batch_size", "predict.device",
               "predict.harmonize", "predict.harmonize_decay_years", "predict.allocation",
               "predict.swap_margin", "predict.change_smoothing", "predict.change_cluster_bonus",
               "predict.change_patch_bonus", "predict.smooth_weight", "predict.ensemble",
               # the rule's `models` param (evaluate.models.evaluated_models)
               "years.test", "datasets.fine.years"),
        unhashed={"paths.cube": _WHERE}),
    "init_store": StageSlice(
        reads=("classes.legend", "years.backward", "years.observed", "years.forward",
               "predict.ensemble.write_layer", *_CUBE),
        unhashed={"scenarios": _SSPS, "paths.cube": _WHERE}),
    "predict": StageSlice(
        reads=("seed", "predict", "classes", "datasets.coarse.groups", *_CUBE,
               "datasets.fine.years", "years.backward", "years.observed", "years.forward"),
        unhashed={"scenarios": _SSPS, "paths.cube": _WHERE}),
    # publish writes the whole config into provenance.json
    "publish": StageSlice(reads=("*",)),
}

# Derived views of Config and the entries they read: a slice may use one if it declares
# all of them.
_DERIVED: dict[str, tuple[str, ...]] = {
    "observed_years": ("datasets.fine.years",),
    "backward_years": ("years.backward",),
    "forward_years": ("years.forward",),
    "observed_product_years": ("years.observed",),
    "product_scenarios": ("years.backward", "years.observed", "scenarios"),
    "product_years": ("years.backward", "years.observed", "years.forward"),
    "chain_years": ("years.backward", "years.forward"),
    "scenario_years": ("years.backward", "years.forward", "years.observed"),
}


def _stage(name: str) -> StageSlice:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no config slice for stage {name!r} (known: {sorted(STAGES)})") from None


def _value(node, dotted: str):
    for part in dotted.split("."):
        node = node[part]
    return node


def slice_hash(config: Config | ConfigSlice, stage: str, *, item: str | None = None) -> str:
    """sha256 of the config entries ``stage`` reads (its slice's ``reads``, less what it
    leaves ``unhashed``): the rule's rerun trigger and the products' provenance hash.

    ``item``: the entry of the stage's ``per_item`` mapping one rule handles (a source
    key of ``download``). The whole config (``"*"``) hashes as :meth:`Config.hash`.
    """
    config = unsliced(config)
    spec = _stage(stage)
    if spec.reads == ("*",):
        return config.hash()
    tree = config.model_dump(mode="json")
    selected = {}
    for key in spec.reads:
        if spec.per_item == key and item is not None:
            key = f"{key}.{item}"
        value = _value(tree, key)
        for hidden in spec.unhashed:
            if hidden.startswith(key + "."):
                value = copy.deepcopy(value)
                *parents, last = hidden[len(key) + 1:].split(".")
                node = value
                for part in parents:
                    node = node[part]
                node.pop(last, None)
        selected[key] = value
    text = json.dumps(selected, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class ConfigSlice:
    """A read-only view of a Config that lets a stage read only its declared entries.

    Reading an undeclared entry raises :class:`UndeclaredConfigError` naming the entry and
    the stage; sections declared in part are views themselves. Derived views
    (``observed_years``, ``scenario_years()``, ...) work when their entries are declared.
    """

    __slots__ = ("_config", "_node", "_prefix", "_stage")

    def __init__(self, config: Config, stage: str, *, _node=None, _prefix: str = ""):
        _stage(stage)
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_node", config if _node is None else _node)
        object.__setattr__(self, "_prefix", _prefix)

    @property
    def stage(self) -> str:
        return self._stage

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        spec = STAGES[self._stage]
        dotted = f"{self._prefix}{name}"
        if not self._prefix and name in _DERIVED:
            missing = [key for key in _DERIVED[name] if not spec.readable(key)]
            if missing:
                raise UndeclaredConfigError(
                    f"stage {self._stage!r} reads {name}, which needs the config entries "
                    f"{missing} its slice does not declare (ai4land.config.STAGES)")
            return getattr(self._config, name)
        if spec.readable(dotted):
            return getattr(self._node, name)
        if any(key.startswith(dotted + ".") for key in (*spec.reads, *spec.unhashed)):
            return ConfigSlice(self._config, self._stage, _node=getattr(self._node, name),
                               _prefix=dotted + ".")
        raise UndeclaredConfigError(
            f"stage {self._stage!r} reads the config entry {dotted!r}, which its slice does "
            "not declare: add it to ai4land.config.STAGES (docs/architecture.md)")

    def __setattr__(self, name, value):
        raise TypeError("a config slice is read-only")

    def __reduce__(self):
        return (_rebuild_slice, (self._config, self._stage, self._prefix))

    def __repr__(self) -> str:
        return f"ConfigSlice({self._stage!r}{', ' + self._prefix[:-1] if self._prefix else ''})"

    def model_dump(self, **kwargs) -> dict:
        """The declared entries under this view, as nested plain data."""
        spec = STAGES[self._stage]
        full = self._node.model_dump(**kwargs)
        if spec.readable(self._prefix[:-1] or "*"):
            return full
        out: dict = {}
        for key in (*spec.reads, *spec.unhashed):
            if not key.startswith(self._prefix) and key != "*":
                continue
            parts = key[len(self._prefix):].split(".")
            src, dst = full, out
            for part in parts[:-1]:
                src = src[part]
                dst = dst.setdefault(part, {})
            dst[parts[-1]] = src[parts[-1]]
        return out


def _rebuild_slice(config: Config, stage: str, prefix: str) -> ConfigSlice:
    view = ConfigSlice(config, stage)
    for part in prefix.rstrip(".").split(".") if prefix else []:
        view = getattr(view, part)
    return view


def stage_config(config: Config | ConfigSlice, stage: str) -> Config:
    """The slice of ``config`` that ``stage`` reads (typed as Config: the slice has the
    same attributes, and reading an undeclared one raises UndeclaredConfigError)."""
    if isinstance(config, ConfigSlice):
        if config.stage != stage:
            raise UndeclaredConfigError(f"stage {stage!r} was handed stage "
                                        f"{config.stage!r}'s config slice")
        return config  # type: ignore[return-value]
    if STAGES[stage].reads == ("*",):
        return config
    return ConfigSlice(config, stage)  # type: ignore[return-value]


def unsliced(config: Config | ConfigSlice) -> Config:
    """The whole Config behind a slice (for hashing, and the model card's record)."""
    return config._config if isinstance(config, ConfigSlice) else config

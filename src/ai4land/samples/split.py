"""Leak-free spatial and temporal split.

The fine grid is cut into square blocks. Test blocks are drawn among the mostly-land
blocks (``split.min_test_land_fraction``), stratified by landscape: a block's stratum is
its dominant class on the observed map of a reference year (the last observed year
before the test years), and every stratum gets test blocks, one each in order of size
while they last, the rest in proportion to the strata's sizes. Inside a stratum a block
is drawn at random (seeded) among the candidates at least half as far from the test
blocks already chosen as the farthest one: spread over the region like farthest point
sampling, without its pull to the map's edges and corners. Validation blocks are
picked by farthest point sampling among the rest. Blocks within ``buffer_blocks`` of a
test block are left out of training, so no training window touches a test block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ai4land.config import stage_config
from ai4land.errors import InputDataError
from ai4land.grid import Window
from ai4land.io.atomic import atomic_path

ROLES = ("train", "val", "test", "buffer", "ocean")


@dataclass(frozen=True)
class Block:
    id: int
    row: int
    col: int
    role: str
    land_fraction: float
    dominant_class: int | None = None  # stratum: the most frequent class on land (None: no map)


@dataclass(frozen=True)
class Split:
    block_size: int
    n_rows: int
    n_cols: int
    blocks: tuple[Block, ...]
    train_years: tuple[int, ...]
    test_years: tuple[int, ...]
    seed: int
    height: int
    width: int
    reference_year: int | None = None  # year of the map the strata come from

    def windows(self, role: str) -> list[Window]:
        """The pixel windows of the blocks with ``role`` (edge blocks may be smaller)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return [self.block_window(b) for b in self.blocks if b.role == role]

    def block_window(self, block: Block) -> Window:
        return Window(
            row=block.row * self.block_size,
            col=block.col * self.block_size,
            height=min(self.block_size, self.height - block.row * self.block_size),
            width=min(self.block_size, self.width - block.col * self.block_size),
        )

    def role_mask(self, role: str) -> np.ndarray:
        """Boolean (height, width) mask of the pixels in blocks with ``role``."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        for window in self.windows(role):
            mask[window.slices] = True
        return mask

    def to_json(self) -> dict:
        data = asdict(self)
        data["blocks"] = [asdict(b) for b in self.blocks]
        data["train_years"] = list(self.train_years)
        data["test_years"] = list(self.test_years)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Split:
        return cls(
            block_size=data["block_size"],
            n_rows=data["n_rows"],
            n_cols=data["n_cols"],
            blocks=tuple(Block(**b) for b in data["blocks"]),
            train_years=tuple(data["train_years"]),
            test_years=tuple(data["test_years"]),
            seed=data["seed"],
            height=data["height"],
            width=data["width"],
            reference_year=data.get("reference_year"),
        )


def farthest_point_sampling(
    points: np.ndarray, k: int, *, rng: np.random.Generator, exclude: np.ndarray | None = None
) -> list[int]:
    """Indices of ``k`` points, each the farthest from those already chosen (and ``exclude``)."""
    if k > len(points):
        raise InputDataError(f"cannot pick {k} blocks out of {len(points)} candidates")
    if k == 0:
        return []
    distance = np.full(len(points), np.inf)
    if exclude is not None and len(exclude):
        for point in exclude:
            distance = np.minimum(distance, np.hypot(*(points - point).T))
        first = int(np.argmax(distance))
    else:
        first = int(rng.integers(len(points)))
    chosen = [first]
    distance = np.minimum(distance, np.hypot(*(points - points[first]).T))
    for _ in range(k - 1):
        distance[chosen] = -1.0
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.hypot(*(points - points[nxt]).T))
    return chosen


def stratified_sampling(points: np.ndarray, strata: np.ndarray, k: int, *,
                        rng: np.random.Generator, far: float = 0.5) -> list[int]:
    """Indices of ``k`` points spread over the region with every stratum represented.

    Strata (one label per point) get one pick each in order of decreasing size while
    picks last; picks left after that go to the strata in proportion to their sizes
    (largest remainder). Picks alternate between strata; each is drawn at random among
    the stratum's unchosen points whose distance to the chosen ones is at least ``far``
    times the largest such distance.
    """
    if k > len(points):
        raise InputDataError(f"cannot pick {k} blocks out of {len(points)} candidates")
    labels, sizes = np.unique(strata, return_counts=True)
    order = np.lexsort((labels, -sizes))  # largest stratum first, ties by label
    labels, sizes = labels[order], sizes[order]
    quota = np.zeros(len(labels), dtype="int64")
    quota[: min(k, len(labels))] = 1
    while quota.sum() < k:  # the rest by largest remainder, again if a stratum runs out
        room = sizes - quota
        weight = np.where(room > 0, sizes, 0)
        share = (k - quota.sum()) * weight / weight.sum()
        extra = np.floor(share).astype("int64")
        left = k - quota.sum() - extra.sum()
        extra[np.argsort(-(share - extra), kind="stable")[:left]] += 1
        quota += np.minimum(extra, room)
    distance = np.full(len(points), np.inf)
    taken = np.zeros(len(points), dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k:
        for j, label in enumerate(labels):
            if quota[j] == 0:
                continue
            quota[j] -= 1
            members = np.flatnonzero((strata == label) & ~taken)
            reach = distance[members]
            pool = members[reach >= far * reach.max()] if np.isfinite(reach.max()) else members
            pick = int(pool[rng.integers(len(pool))])
            chosen.append(pick)
            taken[pick] = True
            distance = np.minimum(distance, np.hypot(*(points - points[pick]).T))
    return chosen


def block_composition(codes: np.ndarray, land_mask: np.ndarray, *, block_size: int,
                      classes: list[int]) -> np.ndarray:
    """(n_rows, n_cols, K) land pixels of each class in each block (other codes ignored).

    Counted class by class and row of blocks by row of blocks (boolean temporaries of
    one band), so a production-size band stays small.
    """
    height, width = codes.shape
    n_rows = -(-height // block_size)
    starts = np.arange(0, width, block_size)
    out = np.zeros((n_rows, len(starts), len(classes)), dtype="int64")
    for r in range(n_rows):
        rows = slice(r * block_size, (r + 1) * block_size)
        band, land = codes[rows], land_mask[rows]
        for k, code in enumerate(classes):
            per_column = ((band == code) & land).sum(axis=0)
            out[r, :, k] = np.add.reduceat(per_column, starts)
    return out


def _block_land(land_mask: np.ndarray, block_size: int) -> np.ndarray:
    """(n_rows, n_cols) land share of each block (edge blocks: of their pixels)."""
    height, width = land_mask.shape
    n_rows = -(-height // block_size)
    n_cols = -(-width // block_size)
    land = np.zeros((n_rows, n_cols))
    for r in range(n_rows):
        for c in range(n_cols):
            rows = slice(r * block_size, (r + 1) * block_size)
            land[r, c] = land_mask[rows, c * block_size : (c + 1) * block_size].mean()
    return land


def _dominant_classes(composition: np.ndarray | None, classes: list[int] | None,
                      shape: tuple[int, int]) -> np.ndarray:
    """The most common class of each block (-1: none, or no composition given)."""
    dominant = np.full(shape, -1, dtype="int64")
    if composition is not None:
        if classes is None or composition.shape != (*shape, len(classes)):
            raise ValueError(f"block composition needs shape {shape} + (classes,), "
                             f"got {composition.shape}")
        has_class = composition.sum(axis=-1) > 0
        dominant[has_class] = np.asarray(classes)[composition.argmax(axis=-1)[has_class]]
    return dominant


def _test_roles(land: np.ndarray, test_cells: np.ndarray, buffer: int) -> np.ndarray:
    """Roles with the test blocks set: test, a ring of ``buffer`` blocks around each,
    ocean (no land), train elsewhere."""
    n_rows, n_cols = land.shape
    roles = np.full((n_rows, n_cols), "train", dtype=object)
    roles[land == 0] = "ocean"
    for r, c in test_cells:
        r0, r1 = max(r - buffer, 0), min(r + buffer + 1, n_rows)
        c0, c1 = max(c - buffer, 0), min(c + buffer + 1, n_cols)
        region = roles[r0:r1, c0:c1]
        region[region == "train"] = "buffer"
    for r, c in test_cells:
        roles[r, c] = "test"
    return roles


def make_split(
    land_mask: np.ndarray,
    *,
    block_size: int,
    n_test: int,
    n_val: int,
    buffer: int,
    train_years: tuple[int, int],
    test_years: tuple[int, int],
    seed: int,
    min_land_fraction: float = 0.25,
    min_test_land_fraction: float = 0.5,
    composition: np.ndarray | None = None,
    classes: list[int] | None = None,
    reference_year: int | None = None,
) -> Split:
    """Roles of the blocks: test (stratified), buffer, validation, train, ocean.

    ``composition`` (n_rows, n_cols, K) counts the land pixels of each of ``classes``
    per block on a reference year's map (:func:`block_composition`); test blocks are
    stratified by their dominant class. Without it all candidates form one stratum.
    Test blocks need ``min_test_land_fraction`` land, validation blocks
    ``min_land_fraction``.
    """
    height, width = land_mask.shape
    land = _block_land(land_mask, block_size)
    n_rows, n_cols = land.shape
    dominant = _dominant_classes(composition, classes, (n_rows, n_cols))
    candidates = np.argwhere(land >= min_land_fraction)
    test_candidates = np.argwhere(land >= max(min_test_land_fraction, min_land_fraction))
    if n_test > len(test_candidates):
        raise InputDataError(
            f"only {len(test_candidates)} blocks have {min_test_land_fraction:.0%} land for "
            f"{n_test} test blocks; lower split.n_test_blocks, split.block_size or "
            "split.min_test_land_fraction")
    rng = np.random.default_rng(seed)
    test_idx = stratified_sampling(test_candidates.astype(float),
                                   dominant[tuple(test_candidates.T)], n_test, rng=rng)
    test_cells = test_candidates[test_idx]
    roles = _test_roles(land, test_cells, buffer)
    remaining = np.array([(r, c) for r, c in candidates if roles[r, c] == "train"], dtype=float)
    val_idx = farthest_point_sampling(
        remaining, min(n_val, max(len(remaining) - 1, 0)), rng=rng, exclude=test_cells.astype(float)
    )
    for i in val_idx:
        r, c = remaining[i].astype(int)
        roles[r, c] = "val"
    if not (roles == "train").any():
        raise InputDataError(
            "split leaves no training block; lower split.n_test_blocks or split.block_size"
        )
    blocks = tuple(
        Block(
            id=r * n_cols + c,
            row=r,
            col=c,
            role=str(roles[r, c]),
            land_fraction=round(float(land[r, c]), 4),
            dominant_class=int(dominant[r, c]) if dominant[r, c] >= 0 else None,
        )
        for r in range(n_rows)
        for c in range(n_cols)
    )
    return Split(
        block_size=block_size,
        n_rows=n_rows,
        n_cols=n_cols,
        blocks=blocks,
        train_years=tuple(range(train_years[0], train_years[1] + 1)),
        test_years=tuple(range(test_years[0], test_years[1] + 1)),
        seed=seed,
        height=height,
        width=width,
        reference_year=reference_year,
    )


def load_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: split file not found; run `ai4land split` first")
    return Split.from_json(json.loads(path.read_text()))


def plot_split(split: Split, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = {
        "train": "#4daf4a",
        "val": "#377eb8",
        "test": "#e41a1c",
        "buffer": "#ffff99",
        "ocean": "#dddddd",
    }
    grid = np.zeros((split.n_rows, split.n_cols), dtype=int)
    for block in split.blocks:
        grid[block.row, block.col] = ROLES.index(block.role)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(grid, cmap=ListedColormap([colours[r] for r in ROLES]), vmin=0, vmax=len(ROLES) - 1)
    ax.set_title(f"spatial split ({split.block_size}-pixel blocks, seed {split.seed})")
    ax.set_xlabel("block column")
    ax.set_ylabel("block row")
    ax.legend(handles=[Patch(color=colours[r], label=r) for r in ROLES], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def run_split(config, *, output: str | Path, figure: str | Path) -> Split:
    """Split the cube's land into train/val/test blocks and write JSON + PNG.

    The test strata come from the observed map of the last observed year before the
    test years (the first observed year if none is earlier).
    """
    config = stage_config(config, "split")  # reads only its slice
    from ai4land.io.cube import Cube

    cube = Cube.from_config(config)
    land_mask = np.asarray(cube.static["land_mask"].values).astype(bool)
    classes = list(config.classes.predicted)
    block_size = config.split.block_size
    observed = cube.target_years
    before = [y for y in observed if y < config.years.test[0]]
    reference = max(before) if before else min(observed)
    height, width = land_mask.shape
    composition = np.concatenate(
        [  # one row of blocks at a time: memory of a band
            block_composition(
                cube.target_window(reference, Window(row, 0, min(block_size, height - row), width)),
                land_mask[row : row + block_size],
                block_size=block_size,
                classes=classes,
            )
            for row in range(0, height, block_size)
        ]
    )
    split = make_split(
        land_mask,
        block_size=block_size,
        n_test=config.split.n_test_blocks,
        n_val=config.split.n_val_blocks,
        buffer=config.split.buffer_blocks,
        train_years=config.years.train,
        test_years=config.years.test,
        seed=config.seed,
        min_test_land_fraction=config.split.min_test_land_fraction,
        composition=composition,
        classes=classes,
        reference_year=reference,
    )
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(split.to_json(), indent=1))
    with atomic_path(figure) as tmp:
        plot_split(split, tmp)
    return split

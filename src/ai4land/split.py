"""Leak-free spatial and temporal split.

The fine grid is cut into square blocks. Farthest point sampling, started from a seeded
random land block, picks the test blocks so they spread over the region; validation
blocks are picked the same way among the rest. Blocks within ``buffer_blocks`` of a
test block are left out of training, so no training window touches a test block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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
) -> Split:
    height, width = land_mask.shape
    n_rows = -(-height // block_size)
    n_cols = -(-width // block_size)
    land = np.zeros((n_rows, n_cols))
    for r in range(n_rows):
        for c in range(n_cols):
            tile = land_mask[r * block_size : (r + 1) * block_size, c * block_size : (c + 1) * block_size]
            land[r, c] = tile.mean()
    candidates = np.argwhere(land >= min_land_fraction)
    rng = np.random.default_rng(seed)
    test_idx = farthest_point_sampling(candidates.astype(float), n_test, rng=rng)
    test_cells = candidates[test_idx]
    roles = np.full((n_rows, n_cols), "train", dtype=object)
    roles[land == 0] = "ocean"
    for r, c in test_cells:
        r0, r1 = max(r - buffer, 0), min(r + buffer + 1, n_rows)
        c0, c1 = max(c - buffer, 0), min(c + buffer + 1, n_cols)
        region = roles[r0:r1, c0:c1]
        region[region == "train"] = "buffer"
    for r, c in test_cells:
        roles[r, c] = "test"
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
        Block(id=r * n_cols + c, row=r, col=c, role=str(roles[r, c]), land_fraction=round(float(land[r, c]), 4))
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

    colours = {"train": "#4daf4a", "val": "#377eb8", "test": "#e41a1c", "buffer": "#ffff99", "ocean": "#dddddd"}
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
    """Split the cube's land into train/val/test blocks and write JSON + PNG."""
    from ai4land.io.cube import Cube

    cube = Cube.from_config(config)
    land_mask = np.asarray(cube.static["land_mask"].values).astype(bool)
    split = make_split(
        land_mask,
        block_size=config.split.block_size,
        n_test=config.split.n_test_blocks,
        n_val=config.split.n_val_blocks,
        buffer=config.split.buffer_blocks,
        train_years=config.years.train,
        test_years=config.years.test,
        seed=config.seed,
    )
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(split.to_json(), indent=1))
    with atomic_path(figure) as tmp:
        plot_split(split, tmp)
    return split

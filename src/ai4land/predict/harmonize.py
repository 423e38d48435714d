"""Re-allocate pixels inside coarse cells so a map matches coarse class-group fractions.

Coarse variables are summed into *groups* (``config.datasets.coarse.groups``); a group
maps to one or more classes and constrains the summed pixel count of those classes
(``natural_nonforest`` → 55 + 66, the split between them is the model's). Predicted
classes that no group mentions form an implicit ``other`` group.

Per coarse cell with ``n`` valid land pixels, the target count of each group is
``fraction × n`` rounded by largest remainder (counts sum to ``n`` exactly). Pixels
then go to groups by the greedy rule "the highest (pixel, group) probability first,
while the group has room" — computed as a deferred-acceptance matching (pixels propose
to groups in order of their probability, groups keep their best proposals up to the
quota), which for scores shared by both sides yields exactly the greedy matching; it
runs compiled (numba), in time about linear in the pixels, without the GIL, so it
overlaps the model's forward pass. Inside a group, a pixel takes the group's class with
the highest probability.

The default target is the delta method (:func:`delta_target`; docs/design.md,
"Harmonisation target").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

OTHER_GROUP = "other"


@dataclass(frozen=True)
class Groups:
    """Class groups in a fixed order; ``variables`` are the coarse variables summed."""

    names: tuple[str, ...]
    classes: tuple[tuple[int, ...], ...]
    variables: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.names)

    def membership(self, predicted: Sequence[int]) -> np.ndarray:
        """(K, G) bool: class index k belongs to group g."""
        member = np.zeros((len(predicted), len(self)), dtype=bool)
        index = {code: k for k, code in enumerate(predicted)}
        for g, codes in enumerate(self.classes):
            for code in codes:
                if code in index:
                    member[index[code], g] = True
        return member

    def code_table(self) -> np.ndarray:
        """256-entry table from uint8 class code to group index (-1 outside every group)."""
        table = np.full(256, -1, dtype="int64")
        for g, codes in enumerate(self.classes):
            table[list(codes)] = g
        return table


def class_groups(groups_config: Mapping, predicted: Sequence[int]) -> Groups:
    """Groups from ``config.datasets.coarse.groups``, plus ``other`` for leftover classes.

    ``groups_config`` maps names to objects (or dicts) with ``variables`` and ``classes``.
    A class may belong to one group only.
    """
    names, classes, variables = [], [], []
    seen: dict[int, str] = {}
    for name, group in groups_config.items():
        group_classes = getattr(group, "classes", None)
        if group_classes is None:
            group_classes = group["classes"]
        group_vars = getattr(group, "variables", None)
        if group_vars is None:
            group_vars = group["variables"]
        for code in group_classes:
            if code in seen:
                raise ValueError(f"class {code} is in coarse groups {seen[code]!r} and {name!r}")
            seen[code] = name
        names.append(name)
        classes.append(tuple(int(c) for c in group_classes))
        variables.append(tuple(group_vars))
    leftover = tuple(int(c) for c in predicted if c not in seen)
    if leftover:
        names.append(OTHER_GROUP)
        classes.append(leftover)
        variables.append(())
    return Groups(tuple(names), tuple(classes), tuple(variables))


# --- fractions ----------------------------------------------------------------------


def _renormalise(fractions: np.ndarray) -> np.ndarray:
    total = fractions.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, fractions / np.where(total > 0, total, 1.0), 0.0)
    return out


def luh_group_fractions(
    cells: np.ndarray, channel_names: Sequence[str], groups: Groups
) -> np.ndarray:
    """Coarse (V, hc, wc) values → (G, hc, wc) group fractions renormalised over land.

    NaN (fill) counts as 0; cells with no data at all are all 0 (unconstrained). The
    implicit ``other`` group has no coarse variables and gets 0. A group variable that
    is missing from ``channel_names`` is an error.
    """
    index = {name: i for i, name in enumerate(channel_names)}
    values = np.nan_to_num(np.asarray(cells, dtype="float64"), nan=0.0)
    out = np.zeros((len(groups), *values.shape[1:]), dtype="float64")
    for g, variables in enumerate(groups.variables):
        for name in variables:
            if name not in index:
                raise KeyError(f"coarse variable {name!r} of group {groups.names[g]!r} is not "
                               f"in the coarse data ({list(channel_names)})")
            out[g] += np.clip(values[index[name]], 0.0, 1.0)
    return _renormalise(out)


def cell_ids(shape: tuple[int, int], factor: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W) index of each pixel's coarse cell (row-major), and the (hc, wc) cell shape."""
    h, w = shape
    hc, wc = -(-h // factor), -(-w // factor)
    rows = np.arange(h) // factor
    cols = np.arange(w) // factor
    return rows[:, None] * wc + cols[None, :], (hc, wc)


def map_group_fractions(
    codes: np.ndarray, groups: Groups, *, factor: int, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate a class map to (G, hc, wc) group fractions over valid pixels.

    Returns the fractions and the (hc, wc) count of valid pixels per cell. Valid pixels
    whose code is in no group are left out of the denominator too.
    """
    h, w = codes.shape
    hc, wc = -(-h // factor), -(-w // factor)
    g = len(groups)
    # slot g of every cell counts the valid pixels in no group (one compiled pass)
    table = groups.code_table()
    table = np.where(table >= 0, table, g)
    counts = np.zeros(hc * wc * (g + 1), dtype="int64")
    _count_groups(np.ascontiguousarray(codes, dtype="uint8"),
                  np.ascontiguousarray(valid, dtype=bool), table, factor, wc, g + 1, counts)
    counts = counts.reshape(hc, wc, g + 1)[..., :g]
    n = counts.sum(axis=-1)
    fractions = counts / np.maximum(n, 1)[..., None]
    return np.moveaxis(fractions, -1, 0).astype("float64"), n


@numba.njit(cache=True, nogil=True)
def _count_groups(codes, valid, table, factor, wc, slots, counts):  # pragma: no cover
    height, width = codes.shape
    for i in range(height):
        first = (i // factor) * wc
        for j in range(width):
            if valid[i, j]:
                counts[(first + j // factor) * slots + table[codes[i, j]]] += 1


def delta_target(
    anchor_map_fractions: np.ndarray,
    luh_mapped_t: np.ndarray,
    luh_mapped_anchor: np.ndarray,
    *,
    offset_weight: float = 1.0,
) -> np.ndarray:
    """Delta-method target: anchor map + (LUH(t) − LUH(anchor)), clipped, renormalised.

    All inputs are (G, hc, wc) group fractions. ``offset_weight`` scales the anchor
    offset (map − LUH at the anchor): 1 is the plain delta method, 0 is raw LUH(t);
    decaying it over a harmonisation period fades the offset out. Cells where the
    anchor map has no land give all-zero (unconstrained) targets.
    """
    anchor = np.asarray(anchor_map_fractions, dtype="float64")
    luh_t = np.nan_to_num(np.asarray(luh_mapped_t, dtype="float64"), nan=0.0)
    luh_a = np.nan_to_num(np.asarray(luh_mapped_anchor, dtype="float64"), nan=0.0)
    target = luh_t + offset_weight * (anchor - luh_a)
    # A cell without LUH data keeps the anchor map's fractions.
    no_luh = (luh_t.sum(axis=0) <= 0) | (luh_a.sum(axis=0) <= 0)
    target = np.where(no_luh[None], anchor, target)
    target = _renormalise(np.clip(target, 0.0, 1.0))
    has_land = anchor.sum(axis=0) > 0
    return np.where(has_land[None], target, 0.0)


def largest_remainder_counts(fractions: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Whole-pixel counts (G, hc, wc) closest to ``fractions × n`` summing to ``n``.

    Fractions are renormalised per cell first; cells whose fractions sum to 0 get -1
    (unconstrained). Ties in the remainders go to the lower group index.
    """
    frac = _renormalise(np.clip(np.asarray(fractions, dtype="float64"), 0.0, None))
    n = np.asarray(n, dtype="int64")
    exact = frac * n[None]
    counts = np.floor(exact + 1e-9).astype("int64")
    short = n - counts.sum(axis=0)
    remainder = exact - counts
    # Rank groups by remainder (descending, stable): the first `short` get one more.
    order = np.argsort(-remainder, axis=0, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(len(frac))[:, None, None], axis=0)
    counts += ranks < short[None]
    unconstrained = frac.sum(axis=0) <= 0
    counts[:, unconstrained] = -1
    return counts


# --- allocation ---------------------------------------------------------------------


@dataclass
class HarmonizeResult:
    index: np.ndarray  # (H, W) int64 class index, -1 outside valid pixels
    counts: np.ndarray  # (G, hc, wc) target counts (-1 = unconstrained cell)
    changed: int  # pixels whose class differs from the plain argmax
    rejections: int  # proposals rejected by a full (cell, group): how contested


def harmonize(
    probs: np.ndarray,
    predicted: Sequence[int],
    *,
    factor: int,
    valid: np.ndarray,
    targets: np.ndarray,
    groups: Groups,
    argmax: np.ndarray | None = None,
    group_p: np.ndarray | None = None,
) -> HarmonizeResult:
    """Class indices (H, W) whose group counts per coarse cell match ``targets``.

    ``probs``: (H, W, K) class probabilities in the order of ``predicted``;
    ``valid``: (H, W) bool, the pixels to allocate (land with data);
    ``targets``: (G, hc, wc) group fractions (rows of cells covering the grid; partial
    edge cells allowed). Cells whose targets are all 0 keep the argmax.
    ``argmax``: (H, W) ``probs.argmax(axis=-1)`` and ``group_p``: (H, W, G) summed
    probabilities per group, when the caller has them (:func:`ai4land.predict.layers.summarise`).
    """
    probs = np.asarray(probs)
    height, width, k = probs.shape
    valid = np.ascontiguousarray(valid, dtype=bool)
    n_groups = len(groups)
    member = groups.membership(predicted)  # (K, G)
    if not member.any(axis=1).all():
        missing = [predicted[i] for i in np.nonzero(~member.any(axis=1))[0]]
        raise ValueError(f"classes {missing} are in no group")
    hc, wc = -(-height // factor), -(-width // factor)
    if targets.shape != (n_groups, hc, wc):
        raise ValueError(f"targets have shape {targets.shape}, expected {(n_groups, hc, wc)}")

    p_all = np.ascontiguousarray(probs.reshape(-1, k), dtype="float32")
    if group_p is None:
        group_p = _group_probabilities(p_all, member)
    group_p = np.ascontiguousarray(group_p, dtype="float32").reshape(-1, n_groups)
    argmax = (p_all.argmax(axis=1) if argmax is None
              else np.ascontiguousarray(argmax, dtype="int64").reshape(-1))
    n = _cell_counts(valid, factor, hc, wc)
    counts = largest_remainder_counts(targets, n)
    quota = np.ascontiguousarray(np.moveaxis(counts, 0, -1).reshape(-1, n_groups))

    # Pixels of constrained cells, in row-major order (ties go to the lower index), and
    # their group scores; those of unconstrained cells keep the argmax.
    constrained = int(n.reshape(-1)[quota[:, 0] >= 0].sum())
    pixels = np.empty(constrained, dtype="int64")
    pixel_cell = np.empty(constrained, dtype="int64")
    scores = np.empty((constrained, n_groups), dtype="float32")
    _constrained_pixels(valid, factor, wc, quota, group_p, pixels, pixel_cell, scores)
    assigned, rejections = _deferred_acceptance(scores, pixel_cell, quota)

    # Within its group a pixel takes the group's most probable class: the argmax itself
    # unless the pixel moved to another group (ties resolve to the lower index either way).
    index = np.empty(height * width, dtype="int64")
    changed = _chosen_classes(valid.reshape(-1), argmax, pixels, assigned,
                              member.argmax(axis=1), member, p_all, index)
    return HarmonizeResult(index=index.reshape(height, width), counts=counts,
                           changed=int(changed), rejections=rejections)


@numba.njit(cache=True, nogil=True)
def _valid_pixels(valid, factor, hc, wc):  # pragma: no cover - compiled
    """The flat indices of the valid pixels (row-major), their coarse cells, each pixel's
    row among them (-1: not valid) and the (hc, wc) valid pixels per cell, in one pass."""
    height, width = valid.shape
    found = 0
    for i in range(height):
        for j in range(width):
            found += valid[i, j]
    pixels = np.empty(found, dtype=np.int64)
    cell = np.empty(found, dtype=np.int64)
    position = np.full(height * width, -1, dtype=np.int64)
    n = np.zeros((hc, wc), dtype=np.int64)
    m = 0
    for i in range(height):
        row = (i // factor) * wc
        for j in range(width):
            if valid[i, j]:
                flat = i * width + j
                pixels[m], cell[m], position[flat] = flat, row + j // factor, m
                n[i // factor, j // factor] += 1
                m += 1
    return pixels, cell, position, n


@numba.njit(cache=True, nogil=True)
def _pool_by_cell(position, eligible, height, width, factor):  # pragma: no cover - compiled
    """The rows (in ``position``'s numbering) of the ``eligible`` pixels cell by cell
    (cells row-major, raster order inside a cell: the rows ascend), and where each
    cell's run starts (plus the end)."""
    pool = np.empty(eligible.size, dtype=np.int64)
    starts = np.empty(eligible.size + 1, dtype=np.int64)
    m = runs = 0
    for top in range(0, height, factor):
        for left in range(0, width, factor):
            first = m
            for y in range(top, min(top + factor, height)):
                for x in range(left, min(left + factor, width)):
                    row = position[y * width + x]
                    if row >= 0 and eligible[row]:
                        pool[m] = row
                        m += 1
            if m > first:
                starts[runs] = first
                runs += 1
    starts[runs] = m
    return pool[:m], starts[:runs + 1]


@numba.njit(cache=True, nogil=True)
def _eligible(in_constrained, cell, source, supply):  # pragma: no cover - compiled
    """``in_constrained & (supply[cell, source] > 0)``: the pixels that may move."""
    out = np.empty(cell.size, dtype=np.bool_)
    for m in range(cell.size):
        out[m] = in_constrained[m] and supply[cell[m], source[m]] > 0
    return out


@numba.njit(cache=True, nogil=True)
def _scatter_rows(pixels, index, argmax, out):  # pragma: no cover - compiled
    """``out`` (H * W): -1, and ``index`` at the valid ``pixels``; how many of those
    differ from the ``argmax``."""
    out[:] = -1
    changed = 0
    for m in range(pixels.size):
        out[pixels[m]] = index[m]
        changed += index[m] != argmax[pixels[m]]
    return changed


@numba.njit(cache=True, nogil=True)
def _cell_counts(valid, factor, hc, wc):  # pragma: no cover - compiled
    """Valid pixels per coarse cell, (hc, wc) int64."""
    n = np.zeros((hc, wc), dtype=np.int64)
    height, width = valid.shape
    for i in range(height):
        for j in range(width):
            if valid[i, j]:
                n[i // factor, j // factor] += 1
    return n


@numba.njit(cache=True, nogil=True)
def _constrained_pixels(valid, factor, wc, quota, group_p, pixels, pixel_cell,
                        scores):  # pragma: no cover - compiled
    """Fill the flat index, coarse cell and group scores of each valid pixel whose cell
    has quotas: cell by cell (row-major inside a cell), so the matching works on one
    cell's pixels and heaps at a time (they stay in cache), while a cell's pixels keep
    their raster order (ties between them break as in the raster)."""
    height, width = valid.shape
    m = 0
    for top in range(0, height, factor):
        for left in range(0, width, factor):
            cell = (top // factor) * wc + left // factor
            if quota[cell, 0] < 0:
                continue
            for i in range(top, min(top + factor, height)):
                for j in range(left, min(left + factor, width)):
                    if not valid[i, j]:
                        continue
                    flat = i * width + j
                    pixels[m] = flat
                    pixel_cell[m] = cell
                    for g in range(scores.shape[1]):
                        scores[m, g] = group_p[flat, g]
                    m += 1


@numba.njit(cache=True, nogil=True)
def _chosen_classes(valid, argmax, pixels, assigned, group_of_class, member, probs,
                    index):  # pragma: no cover - compiled
    """``index``: -1 off the valid pixels, the argmax class, or for a pixel assigned to
    another group than its argmax's, that group's most probable class (the lower index
    on ties). Returns how many pixels moved."""
    for flat in range(valid.size):
        index[flat] = argmax[flat] if valid[flat] else -1
    moved = 0
    for m in range(pixels.size):
        flat = pixels[m]
        group = assigned[m]
        if group == group_of_class[argmax[flat]]:
            continue
        best, best_p = -1, -1.0
        for c in range(member.shape[0]):
            if member[c, group] and probs[flat, c] > best_p:
                best, best_p = c, probs[flat, c]
        index[flat] = best
        moved += 1
    return moved


def _group_probabilities(p: np.ndarray, member: np.ndarray) -> np.ndarray:
    """(N, G) summed class probabilities per group; column sums, not a BLAS matmul, whose
    threads fight the model's for the cores (and it is slower for a handful of columns)."""
    out = np.empty((len(p), member.shape[1]), dtype="float32")
    for g in range(member.shape[1]):
        (columns,) = np.nonzero(member[:, g])
        if len(columns) == 1:
            out[:, g] = p[:, columns[0]]
        else:
            np.sum(p[:, columns], axis=1, out=out[:, g])
    return out


def _deferred_acceptance(gp: np.ndarray, pc: np.ndarray,
                         quota: np.ndarray) -> tuple[np.ndarray, int]:
    """Group index per pixel, and the number of rejected proposals: pixels propose in
    order of ``gp`` (M, G), each (cell, group) keeps its best proposals up to ``quota``
    (cells, G); ties go to the lower pixel index (and, for a pixel's own choices, to the
    lower group index). Every cell's quotas must sum to its pixel count.

    Scores compare as the bits of non-negative float32 (negative values, -0.0 included,
    count as 0), so the order is exact and platform-independent.
    """
    if gp.shape[1] > 32 or len(gp) >= 2**31:
        raise ValueError(f"harmonisation takes at most 32 groups and 2**31 pixels at once, "
                         f"got {gp.shape[1]} groups and {len(gp)} pixels")
    scores = np.ascontiguousarray(gp, dtype="float32").view("int32")
    held, rejections = _propose(scores, np.ascontiguousarray(pc, dtype="int64"),
                                np.ascontiguousarray(quota, dtype="int64").reshape(-1))
    if rejections < 0:  # cannot happen when quotas sum to the pixel counts
        raise RuntimeError("harmonisation failed to place every pixel")
    return held, int(rejections)


@numba.njit(cache=True, nogil=True)
def _sift_down(heap_pixel, heap_score, base, n, at, pixel, score):  # pragma: no cover
    """Place (pixel, score) at ``at`` of the n-element min-heap at ``base`` and sift it
    down; the root is the worst holder (lowest score, then highest pixel index)."""
    while True:
        child = 2 * at + 1
        if child >= n:
            break
        c, cs = heap_pixel[base + child], heap_score[base + child]
        if child + 1 < n:
            d, ds = heap_pixel[base + child + 1], heap_score[base + child + 1]
            if ds < cs or (ds == cs and d > c):
                child, c, cs = child + 1, d, ds
        if score < cs or (score == cs and pixel > c):
            break
        heap_pixel[base + at], heap_score[base + at] = c, cs
        at = child
    heap_pixel[base + at], heap_score[base + at] = pixel, score


@numba.njit(cache=True, nogil=True)
def _first_choices(scores, pixel_cell, quota):  # pragma: no cover - compiled
    """Each pixel's first choice (the highest score, the lower group on ties) and the
    cells where some group gets more first choices than its quota (contested)."""
    m, n_groups = scores.shape
    n_keys = quota.size
    held = np.full(m, -1, dtype=np.int64)
    count = np.zeros(n_keys, dtype=np.int64)
    for pixel in range(m):
        group, best = 0, max(scores[pixel, 0], 0)
        for g in range(1, n_groups):
            s = max(scores[pixel, g], 0)
            if s > best:
                group, best = g, s
        held[pixel] = group
        count[pixel_cell[pixel] * n_groups + group] += 1
    contested = np.zeros(n_keys // n_groups + 1, dtype=np.bool_)
    for key in range(n_keys):
        if count[key] > quota[key]:
            contested[key // n_groups] = True
    return held, contested


@numba.njit(cache=True, nogil=True)
def _propose(scores, pixel_cell, quota):  # pragma: no cover - compiled
    """McVitie-Wilson deferred acceptance: each pixel proposes in turn; a full (cell,
    group) keeps a min-heap of its holders and evicts the worst for a better proposer,
    who then proposes again. With strict preferences (ties broken as documented in
    ``_deferred_acceptance``) the pixel-optimal stable matching is unique, whatever the
    order of proposals, and for preferences from one shared score it is the greedy
    "best (pixel, group) pair first" matching. Cells where every pixel's first choice
    fits are settled without heaps; a (cell, group) becomes a heap only once full. Heaps
    keep each holder's score beside it (no random reads of the score table). Returns -1
    rejections if a pixel runs out of groups."""
    # The proposal loop below is the kernel's hot path: it stays in one piece (no call
    # per proposal); only the one-off first pass is a function of its own.
    m, n_groups = scores.shape
    n_keys = quota.size
    held, contested = _first_choices(scores, pixel_cell, quota)
    first = np.zeros(n_keys + 1, dtype=np.int64)  # heap of key k: first[k]..first[k+1]
    for k in range(n_keys):
        first[k + 1] = first[k] + (max(quota[k], 0) if contested[k // n_groups] else 0)
    size = np.zeros(n_keys, dtype=np.int64)
    heap_pixel = np.empty(first[-1], dtype=np.int32)
    heap_score = np.empty(first[-1], dtype=np.int32)
    refused = np.zeros(m, dtype=np.uint32)  # bit g: the pixel was rejected by group g
    rejections = 0
    for start in range(m):
        if not contested[pixel_cell[start]]:
            continue  # keeps its first choice
        pixel = start
        while pixel >= 0:
            if refused[pixel] == 0:  # a first proposal: the first choice found above
                group = held[pixel]
                best = max(scores[pixel, group], 0)
            else:
                group, best = -1, -1
                for g in range(n_groups):
                    if not (refused[pixel] >> np.uint32(g)) & np.uint32(1):
                        s = max(scores[pixel, g], 0)
                        if s > best:
                            group, best = g, s
                if group < 0:
                    return held, -1
            key = pixel_cell[pixel] * n_groups + group
            base, n = first[key], size[key]
            if n < quota[key]:  # room: append; a heap is needed only once it is full
                heap_pixel[base + n], heap_score[base + n] = pixel, best
                size[key] = n + 1
                held[pixel] = group
                pixel = -1
                if n + 1 == quota[key]:
                    for at in range((n + 1) // 2 - 1, -1, -1):
                        _sift_down(heap_pixel, heap_score, base, n + 1, at,
                                   heap_pixel[base + at], heap_score[base + at])
                continue
            rejections += 1
            if n > 0:
                worst, s = heap_pixel[base], heap_score[base]
                if best > s or (best == s and pixel < worst):  # evict the worst
                    _sift_down(heap_pixel, heap_score, base, n, 0, pixel, best)
                    held[pixel] = group
                    held[worst] = -1
                    refused[worst] |= np.uint32(1) << np.uint32(group)
                    pixel = worst
                    continue
            refused[pixel] |= np.uint32(1) << np.uint32(group)
    return held, rejections


def _check_allocation(member: np.ndarray, predicted, targets: np.ndarray, prior, *,
                      factor: int, shape: tuple[int, int]) -> tuple[int, int]:
    """The coarse grid's (rows, cols); ValueError for inputs that do not fit together."""
    height, width = shape
    if not member.any(axis=1).all():
        missing = [predicted[i] for i in np.nonzero(~member.any(axis=1))[0]]
        raise ValueError(f"classes {missing} are in no group")
    hc, wc = -(-height // factor), -(-width // factor)
    if targets.shape != (member.shape[1], hc, wc):
        raise ValueError(f"targets have shape {targets.shape}, expected "
                         f"{(member.shape[1], hc, wc)}")
    if np.shape(prior) != (height, width):
        raise ValueError(f"prior has shape {np.shape(prior)}, expected {(height, width)}")
    return hc, wc


def _transfer_by_score(pool, p, cell, source, known, supply, demand, index, moved) -> None:
    """The net change by score alone: every (pool pixel, gaining class of its cell) pair,
    best ``p(new) - p(old)`` first; ties go to the lower pixel, then the lower class."""
    k = p.shape[1]
    pair_pixel, pair_class = np.nonzero(demand[cell[pool]] > 0)
    pair_pixel = pool[pair_pixel]
    old = np.where(known[pair_pixel], p[pair_pixel, np.minimum(source[pair_pixel], k - 1)],
                   0.0)
    score = p[pair_pixel, pair_class] - old
    order = np.lexsort((pair_class, pair_pixel, -score))
    _transfer(pair_pixel[order], pair_class[order], cell, source, supply, demand, index, moved)


def allocate_change(  # long: signature + docstring are 47 lines; the steps are helpers
    probs: np.ndarray,
    predicted: Sequence[int],
    *,
    factor: int,
    valid: np.ndarray,
    targets: np.ndarray,
    groups: Groups,
    prior: np.ndarray,
    margin: float,
    argmax: np.ndarray | None = None,
    smoothing: int = 1,
    patch_bonus: float = 0.0,
    changed_bonus: float = 0.0,
) -> HarmonizeResult:
    """Class indices (H, W) that change ``prior`` only as much as ``targets`` ask.

    ``prior``: (H, W) class indices of the previous map (-1: no predicted class there).
    Per coarse cell, each group's whole-pixel count (:func:`largest_remainder_counts` of
    ``targets``) is split over the group's classes in the proportions the prior map has
    in the cell (the model's mean probabilities where the group is new to the cell; a
    class the prior has keeps a pixel while the group has room for it), so a class only
    changes as its group does. Then only each class's *net* change moves: the pixels of
    losing classes (and pixels without a prior class) go to gaining classes, the pairs
    of highest score ``p(new) - p(old)`` first, while the losing class still has pixels
    to give and the gaining class room; every other pixel keeps its prior class. Beyond
    the net change, two pixels of one cell swap classes (c -> h and h -> c) only where
    each one's score for the other class exceeds ``margin`` (1 or more: never). Cells
    whose targets are all 0 keep the prior (the argmax where it has no class). Group
    counts match the targets as exactly as :func:`harmonize`'s do; the result is a pure
    function of the inputs.

    ``smoothing`` > 1: the scores are those of the probabilities averaged over each
    pixel's ``smoothing`` x ``smoothing`` neighbourhood of valid pixels inside its coarse
    cell (:func:`cell_smoothed`), so evidence shared by neighbours outranks a lone pixel's
    and changes come in patches rather than scattered pixels.

    ``patch_bonus`` or ``changed_bonus`` > 0: the net change is allocated greedily one
    pixel at a time (as the "expander"/"patcher" allocators of CLUE and Dinamica EGO
    grow patches), the score of a pixel for class h raised by ``patch_bonus`` x (its 8
    neighbours inside the coarse cell that hold h, in the prior or converted to h) / 8
    plus ``changed_bonus`` x (its neighbours inside the cell converted this year, to any
    class) / 8 (:func:`_transfer_patches`): a pixel next to an existing patch of h, or
    next to the year's other changes, outranks a lone one of the same score, so changes
    grow patches from their edges and new ones from their best pixel. Both 0 rank by the
    scores alone (the pairs sorted once). Either way the counts are the same exact net
    change; neighbours count only inside the cell, so each cell is allocated on its own.
    """
    probs = np.asarray(probs)
    height, width, k = probs.shape
    valid = np.ascontiguousarray(valid, dtype=bool)
    member = groups.membership(predicted)  # (K, G)
    hc, wc = _check_allocation(member, predicted, targets, prior, factor=factor,
                               shape=(height, width))
    flat_probs = probs.reshape(-1, k)
    if argmax is None:
        argmax = flat_probs.argmax(axis=1)
    argmax = np.asarray(argmax, dtype="int64").reshape(-1)
    # the valid pixels (flat, row-major), their coarse cells (as cell_ids's), each
    # pixel's row in ``pixels`` (-1: not valid) and the valid pixels per cell
    pixels, cell, position, n = _valid_pixels(valid, factor, hc, wc)
    counts = largest_remainder_counts(targets, n)
    if smoothing > 1:  # cell_smoothed at the valid pixels only
        p = np.empty((len(pixels), k), dtype="float64")
        _smoothed_pixels(_float_values(probs), valid, factor, smoothing, position, p)
    else:
        p = flat_probs[pixels].astype("float64", copy=False)
    before = np.asarray(prior, dtype="int64").reshape(-1)[pixels]
    n_cells = hc * wc
    group_counts = counts.reshape(len(groups), n_cells).T  # (cells, G), -1: unconstrained
    constrained = group_counts[:, 0] >= 0
    known = before >= 0
    prior_counts = np.bincount(cell[known] * k + before[known],
                               minlength=n_cells * k).reshape(n_cells, k)
    mean_p = _cell_sums(cell, p, n_cells)
    wanted = _class_counts(prior_counts, mean_p, np.maximum(group_counts, 0), member)
    net = np.where(constrained[:, None], wanted - prior_counts, 0)

    index = np.where(known, before, argmax[pixels])  # unconstrained cells: as they were
    in_constrained = constrained[cell]
    source = np.where(known, before, k)  # k: no prior class, every such pixel moves
    supply = np.zeros((n_cells, k + 1), dtype="int64")
    supply[:, :k] = np.maximum(-net, 0)
    supply[:, k] = np.bincount(cell[~known & in_constrained], minlength=n_cells)
    demand = np.maximum(net, 0)
    eligible = _eligible(in_constrained, cell, source, supply)  # the pixels that may move
    moved = np.zeros(len(pixels), dtype=bool)
    if patch_bonus > 0 or changed_bonus > 0:
        # pool pixels cell by cell (raster order inside a cell); ``position`` finds the
        # neighbours
        pool, starts = _pool_by_cell(position, eligible, height, width, factor)
        if len(pool):
            current = np.where(known, before, -1)
            _transfer_patches(pool, starts, p, pixels, position, current, cell, source,
                              known, supply, demand, index, moved, width, factor,
                              np.asarray((patch_bonus, changed_bonus), dtype="float64"))
    else:
        pool = np.flatnonzero(eligible)
        if len(pool):
            _transfer_by_score(pool, p, cell, source, known, supply, demand, index, moved)
    if margin < 1:
        _swap(p, cell, before, index, in_constrained & known & ~moved, margin)
    out = np.empty(height * width, dtype="int64")
    changed = _scatter_rows(pixels, index, argmax, out)
    return HarmonizeResult(index=out.reshape(height, width), counts=counts,
                           changed=int(changed), rejections=0)


def cell_smoothed(values: np.ndarray, valid: np.ndarray, *, factor: int, size: int) -> np.ndarray:
    """(H, W, K) float64 mean of ``values`` over the valid pixels of each pixel's
    ``size`` x ``size`` neighbourhood inside its own coarse cell (so a band of whole cells
    gives the same result whatever the band's extent); pixels without a valid neighbour
    keep theirs.

    Computed cell by cell in one compiled pass (no GIL), skipping cells without a valid
    pixel (open ocean: they keep their values), with the arithmetic of the separable box
    filter it replaces (``scipy.ndimage.uniform_filter1d`` of scipy 1.17, mode "constant",
    over the cell's rows then its columns: a running sum ``+= entering - leaving``, each
    output that sum ``/ size``), so the means are the same to the bit (tested against
    it)."""
    values = _float_values(values)
    height, width, k = values.shape
    valid = np.ascontiguousarray(valid, dtype=bool)
    if valid.shape != (height, width):
        raise ValueError(f"valid has shape {valid.shape}, expected {(height, width)}")
    # every pixel a row of ``out``; the kernel leaves cells without a valid pixel alone
    out = values.reshape(-1, k).astype("float64")
    _smoothed_pixels(values, valid, factor, size, np.arange(height * width), out)
    return out.reshape(height, width, k)


def _float_values(values: np.ndarray) -> np.ndarray:
    """``values`` as a contiguous float32 or float64 array (float32 stays float32)."""
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype("float64")
    return np.ascontiguousarray(values)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _running_means(padded, size, out, tmp):  # pragma: no cover - compiled
    """``uniform_filter1d``'s running mean along axis 0 of ``padded`` (n + size - 1, m),
    every column at once, into ``out`` (n, m): the sum of the first ``size`` rows, then
    ``+= entering - leaving`` row by row, each output that sum ``/ size``. ``tmp`` (m,)
    holds the sums. The loops run over whole rows (views taken outside them), so LLVM
    vectorises them: the same operations on each element, hence the same bits."""
    n = out.shape[0]
    tmp[:] = 0.0
    for j in range(size):
        row = padded[j]
        for e in range(tmp.size):
            tmp[e] += row[e]
    first = out[0]
    for e in range(tmp.size):
        first[e] = tmp[e] / size
    for i in range(1, n):
        enter, leave, dst = padded[i - 1 + size], padded[i - 1], out[i]
        for e in range(tmp.size):
            tmp[e] += enter[e] - leave[e]
        for e in range(tmp.size):
            dst[e] = tmp[e] / size


@numba.njit(cache=True, nogil=True)
def _fill_cell(values, valid, top, left, factor, half, rows):  # pragma: no cover - compiled
    """Rows ``half`` .. ``half + factor`` of ``rows`` (factor + size - 1, factor, K + 1):
    one cell's values times their weight (1 valid, 0 not) and, last, the weight; zero
    beyond the raster. The other rows (the padding) are left as they are (zero)."""
    height, width, k = values.shape
    for r in range(factor):
        y = top + r
        dst = rows[half + r]
        if y >= height:
            dst[:] = 0.0
            continue
        src, ok = values[y], valid[y]
        for q in range(factor):
            x = left + q
            cell = dst[q]
            if x < width:
                w = 1.0 if ok[x] else 0.0
                v = src[x]
                for c in range(k):
                    cell[c] = np.float64(v[c]) * w
                cell[k] = w
            else:
                cell[:] = 0.0


@numba.njit(cache=True, nogil=True)
def _has_valid(valid, top, bottom, left, right):  # pragma: no cover - compiled
    for y in range(top, bottom):
        for x in range(left, right):
            if valid[y, x]:
                return True
    return False


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cell_box_means(values, valid, top, left, factor, size, rows, first, columns, sums,
                    tmp):  # pragma: no cover - compiled
    """One cell's box means into ``sums`` (factor, factor, K + 1), indexed (column, row,
    channel): the valid values and, last, the valid weight, over the cell's rows
    (axis 0) first, then its columns, as ``uniform_filter1d`` in mode "constant" on the
    cell. ``rows`` and ``columns`` (factor + size - 1, factor, K + 1) are zero outside
    what is written here (the padding); pass 1's means go to ``first`` and, transposed
    (column, row), to ``columns``, so both passes run along axis 0 over whole rows."""
    kk = values.shape[2] + 1
    half = size // 2
    _fill_cell(values, valid, top, left, factor, half, rows)
    span = factor * kk
    _running_means(rows.reshape(-1, span), size, first.reshape(-1, span), tmp)
    flat_columns = columns.reshape(-1, span)
    for q in range(factor):
        dst = flat_columns[half + q]
        for r in range(factor):
            for c in range(kk):
                dst[r * kk + c] = first[r, q, c]
    _running_means(flat_columns, size, sums.reshape(-1, span), tmp)


@numba.njit(cache=True, nogil=True)
def _cell_sums(cell, values, n_cells):  # pragma: no cover - compiled
    """(n_cells, K) sums of ``values`` (N, K) by ``cell`` (N,), added in the order of the
    rows (as ``np.bincount`` with weights adds them, so the sums are the same)."""
    out = np.zeros((n_cells, values.shape[1]), dtype=np.float64)
    for i in range(cell.size):
        for c in range(values.shape[1]):
            out[cell[i], c] += values[i, c]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _smoothed_pixels(values, valid, factor, size, position,
                     out):  # pragma: no cover - compiled
    """:func:`cell_smoothed` into row ``position[flat]`` of ``out`` (N, K) for each pixel
    with a row (``position`` -1: none; allocation gives the valid pixels rows, the
    whole-grid :func:`cell_smoothed` every pixel): in cells with a valid pixel, the mean
    over the valid pixels of the neighbourhood, or the pixel's own values without one;
    cells without a valid pixel are not written. (The numpy error model: a division by
    a zero weight, whose quotients are not used, does not raise; the quotients are
    computed for all channels at once, so they vectorise.)"""
    height, width, k = values.shape
    kk = k + 1
    pad = factor + size - 1
    rows = np.zeros((pad, factor, kk), dtype=np.float64)
    first = np.empty((factor, factor, kk), dtype=np.float64)
    columns = np.zeros((pad, factor, kk), dtype=np.float64)
    sums = np.empty((factor, factor, kk), dtype=np.float64)  # (column, row, channel)
    tmp = np.empty(factor * kk, dtype=np.float64)
    quotient = np.empty(kk, dtype=np.float64)
    for top in range(0, height, factor):
        for left in range(0, width, factor):
            bottom, right = min(top + factor, height), min(left + factor, width)
            if not _has_valid(valid, top, bottom, left, right):
                continue
            _cell_box_means(values, valid, top, left, factor, size, rows, first, columns,
                            sums, tmp)
            for y in range(top, bottom):
                for x in range(left, right):
                    m = position[y * width + x]
                    if m < 0:
                        continue
                    s, o = sums[x - left, y - top], out[m]
                    weight = s[k]
                    if weight > 0:
                        for c in range(kk):
                            quotient[c] = s[c] / weight
                        for c in range(k):
                            o[c] = quotient[c]
                    else:
                        v = values[y, x]
                        for c in range(k):
                            o[c] = np.float64(v[c])


def _class_counts(prior_counts: np.ndarray, mean_p: np.ndarray, group_counts: np.ndarray,
                  member: np.ndarray) -> np.ndarray:
    """(cells, K) whole-pixel class counts: each group's count split over its classes in
    the prior's proportions (the model's where the prior has none of the group), a class
    the prior has keeping one pixel while the group has room for it."""
    n_cells, k = prior_counts.shape
    wanted = np.zeros((n_cells, k), dtype="int64")
    for g in range(member.shape[1]):
        (classes,) = np.nonzero(member[:, g])
        total = group_counts[:, g]
        if len(classes) == 1:
            wanted[:, classes[0]] = total
            continue
        weights = prior_counts[:, classes].astype("float64")
        new = weights.sum(axis=1) == 0
        weights[new] = mean_p[new][:, classes]
        weights[weights.sum(axis=1) == 0, 0] = 1.0
        split = largest_remainder_counts(weights.T[:, :, None], total[:, None])[:, :, 0].T
        present = prior_counts[:, classes] > 0
        for _ in range(len(classes)):  # a present class at 0 takes one from the largest
            short = present & (split == 0)
            largest = split.argmax(axis=1)
            fix = short.any(axis=1) & (split[np.arange(n_cells), largest] > 1)
            if not fix.any():
                break
            rows = np.flatnonzero(fix)
            split[rows, largest[rows]] -= 1
            split[rows, short[rows].argmax(axis=1)] += 1
        wanted[:, classes] = split
    return wanted


def _swap(p: np.ndarray, cell: np.ndarray, before: np.ndarray, index: np.ndarray,
          eligible: np.ndarray, margin: float) -> None:
    """Swap classes between pairs of ``eligible`` pixels of one cell in place: a pixel of
    class c whose best other class h scores ``p(h) - p(c) > margin`` with one of class h
    scoring ``p(c) - p(h) > margin``, the highest scores paired first (counts unchanged)."""
    k = p.shape[1]
    candidates, new, score = _swap_candidates(p, before, np.ascontiguousarray(eligible),
                                              float(margin))
    if not len(candidates):
        return
    old = before[candidates]
    side = (old > new).astype("int64")
    run = ((cell[candidates] * k + np.minimum(old, new)) * k + np.maximum(old, new)) * 2 + side
    order = np.lexsort((candidates, -score, run))
    candidates, new, run = candidates[order], new[order], run[order]
    keys, first, sizes = np.unique(run, return_index=True, return_counts=True)
    rank = np.arange(len(run)) - np.repeat(first, sizes)
    partner = np.searchsorted(keys, run ^ 1)
    found = (partner < len(keys)) & (keys[np.minimum(partner, len(keys) - 1)] == run ^ 1)
    pairs = np.where(found, sizes[np.minimum(partner, len(keys) - 1)], 0)
    mine = np.repeat(sizes, sizes)
    swap = rank < np.minimum(mine, pairs)
    index[candidates[swap]] = new[swap]


@numba.njit(cache=True, nogil=True)
def _swap_candidates(p, before, eligible, margin):  # pragma: no cover - compiled
    """The ``eligible`` pixels whose best other class h (numpy's argmax of ``p(h) -
    p(old)`` over h != old: the first maximum, or the first NaN) scores above
    ``margin``: their positions (ascending), h and that score."""
    n, k = p.shape
    found = 0
    for x in range(n):
        found += eligible[x]
    candidates = np.empty(found, dtype=np.int64)
    new = np.empty(found, dtype=np.int64)
    score = np.empty(found, dtype=np.float64)
    m = 0
    for x in range(n):
        if not eligible[x]:
            continue
        old = before[x]
        base = p[x, old]
        above = False  # some gain above the margin: else not a candidate (nor with a NaN)
        for h in range(k):
            above |= (h != old) & (p[x, h] - base > margin)
        if not above:
            continue
        best = 0
        top = -np.inf if old == 0 else p[x, 0] - base
        if not np.isnan(top):
            for h in range(1, k):
                gain = -np.inf if h == old else p[x, h] - base
                if gain > top or np.isnan(gain):
                    best, top = h, gain
                    if np.isnan(gain):
                        break
        if top > margin:
            candidates[m], new[m], score[m] = x, best, top
            m += 1
    return candidates[:m], new[:m], score[:m]


@numba.njit(cache=True, nogil=True)
def _transfer(pair_pixel, pair_class, cell, source, supply, demand, index,
              moved):  # pragma: no cover - compiled
    """Greedy over pairs in order: a pixel moves to a class while its cell's source class
    has pixels to give and the class room."""
    for m in range(pair_pixel.size):
        x, h = pair_pixel[m], pair_class[m]
        if moved[x]:
            continue
        c, s = cell[x], source[x]
        if supply[c, s] > 0 and demand[c, h] > 0:
            supply[c, s] -= 1
            demand[c, h] -= 1
            index[x] = h
            moved[x] = True


@numba.njit(cache=True, inline="always")
def _before(s1, x1, h1, s2, x2, h2):  # pragma: no cover - compiled
    """Entry 1 is taken before entry 2: higher score, then lower pixel, then lower class."""
    return s1 > s2 or (s1 == s2 and (x1 < x2 or (x1 == x2 and h1 < h2)))


@numba.njit(cache=True)
def _push(score, pix, cls, size, s, x, h):  # pragma: no cover - compiled
    """Push (s, x, h) on the max-heap held in the first ``size`` entries; the new size."""
    at = size
    while at > 0:
        up = (at - 1) // 2
        if not _before(s, x, h, score[up], pix[up], cls[up]):
            break
        score[at], pix[at], cls[at] = score[up], pix[up], cls[up]
        at = up
    score[at], pix[at], cls[at] = s, x, h
    return size + 1


@numba.njit(cache=True)
def _pop(score, pix, cls, size):  # pragma: no cover - compiled
    """Remove the top of the heap (read it first); the new size."""
    size -= 1
    s, x, h = score[size], pix[size], cls[size]
    at = 0
    while True:
        child = 2 * at + 1
        if child >= size:
            break
        if child + 1 < size and _before(score[child + 1], pix[child + 1], cls[child + 1],
                                        score[child], pix[child], cls[child]):
            child += 1
        if not _before(score[child], pix[child], cls[child], s, x, h):
            break
        score[at], pix[at], cls[at] = score[child], pix[child], cls[child]
        at = child
    if size > 0:
        score[at], pix[at], cls[at] = s, x, h
    return size


@numba.njit(cache=True)
def _cell_neighbours(flat, width, height, factor, out):  # pragma: no cover - compiled
    """Write the flat indices of pixel ``flat``'s 8 neighbours inside its coarse cell to
    ``out``; return how many."""
    r, q = flat // width, flat % width
    found = 0
    for rr in range(max(r - 1, r // factor * factor),
                    min(r + 2, height, (r // factor + 1) * factor)):
        for qq in range(max(q - 1, q // factor * factor),
                        min(q + 2, width, (q // factor + 1) * factor)):
            if rr != r or qq != q:
                out[found] = rr * width + qq
                found += 1
    return found


@numba.njit(cache=True)
def _pair_score(p, x, h, source, known, bonus, n_class, n_changed):  # pragma: no cover
    old = p[x, source[x]] if known[x] else 0.0
    return p[x, h] - old + (bonus[0] * n_class + bonus[1] * n_changed) / 8.0


@numba.njit(cache=True)
def _heapify(score, pix, cls, size):  # pragma: no cover - compiled
    """Order the first ``size`` entries as a max-heap (bottom-up, in linear time): the
    entries pop in the same order as pushed one by one, the order being total."""
    for at in range(size // 2 - 1, -1, -1):
        s, x, h = score[at], pix[at], cls[at]
        while True:
            child = 2 * at + 1
            if child >= size:
                break
            if child + 1 < size and _before(score[child + 1], pix[child + 1],
                                            cls[child + 1], score[child], pix[child],
                                            cls[child]):
                child += 1
            if not _before(score[child], pix[child], cls[child], s, x, h):
                break
            score[at], pix[at], cls[at] = score[child], pix[child], cls[child]
            at = child
        score[at], pix[at], cls[at] = s, x, h


@numba.njit(cache=True)
def _cell_pairs(local, c, p, pixels, position, current, source, known, demand, width,
                factor, bonus, count, score, pix, cls):  # pragma: no cover - compiled
    """Count the classes around each pool pixel of cell ``c`` (``count``) and fill the
    heap with its (pixel, gaining class) pairs; the heap's size. The scores are
    :func:`_pair_score`'s, its bonus term looked up for the 9 possible counts."""
    n_classes = demand.shape[1]
    height = position.size // width
    near = np.empty(8, dtype=np.int64)
    gains = np.empty(n_classes, dtype=np.int64)  # the classes with room in the cell
    n_gains = 0
    for h in range(n_classes):
        if demand[c, h] > 0:
            gains[n_gains] = h
            n_gains += 1
    term = np.empty(9, dtype=np.float64)  # _pair_score's bonus term for 0..8 neighbours
    for n_class in range(9):
        term[n_class] = (bonus[0] * n_class + bonus[1] * 0) / 8.0
    size = 0
    for m in range(local.size):
        x = local[m]
        for h in range(n_classes):
            count[m, h] = 0
        for j in range(_cell_neighbours(pixels[x], width, height, factor, near)
                       if bonus[0] != 0 else 0):  # else the counts weigh 0 in every score
            y = position[near[j]]
            if y >= 0 and current[y] >= 0:
                count[m, current[y]] += 1
        old = p[x, source[x]] if known[x] else 0.0
        for i in range(n_gains):
            h = gains[i]
            score[size] = p[x, h] - old + term[count[m, h]]
            pix[size], cls[size] = x, h
            size += 1
    _heapify(score, pix, cls, size)
    return size


@numba.njit(cache=True)
def _converted(x, h, local, c, p, pixels, position, source, known, supply, demand, moved,
               width, factor, bonus, count, changed, near, score, pix, cls,
               size):  # pragma: no cover - compiled
    """Raise the counts of pool pixel ``x``'s neighbours once it converted to ``h`` and
    push their new pairs; the heap's size."""
    height = position.size // width
    n = local.size
    for j in range(_cell_neighbours(pixels[x], width, height, factor, near)):
        y = position[near[j]]
        at = np.searchsorted(local, y)
        if y < 0 or at >= n or local[at] != y or moved[y]:
            continue  # not valid, not in the pool (keeps its class) or converted
        count[at, h] += 1
        changed[at] += 1
        if supply[c, source[y]] == 0:
            continue
        for g in range(demand.shape[1]):
            if demand[c, g] > 0 and (g == h or bonus[1] > 0):
                s = _pair_score(p, y, g, source, known, bonus, count[at, g], changed[at])
                size = _push(score, pix, cls, size, s, y, g)
    return size


@numba.njit(cache=True, nogil=True)
def _transfer_patches(pool, starts, p, pixels, position, current, cell, source, known,
                      supply, demand, index, moved, width, factor,
                      bonus):  # pragma: no cover - compiled
    """Greedy transfer of each cell's net change, one pixel at a time: the (pool pixel x,
    gaining class h) pair of highest ``p(h) - p(old) + (bonus[0] * n_h(x) + bonus[1] *
    n_changed(x)) / 8`` converts while the source class has pixels to give and h room,
    where ``n_h(x)`` counts x's 8 neighbours in its coarse cell whose class (the prior's,
    or the one just converted to) is h and ``n_changed(x)`` those converted so far; a
    conversion raises its neighbours' counts. Ties go to the lower pixel, then the lower
    class (as :func:`_transfer`'s sorted pairs). ``pool``: the pixels that may convert,
    cell by cell (``starts``), ascending inside a cell. The working arrays are sized for
    the largest cell once; a cell stops once its net change is placed."""
    n_classes = demand.shape[1]
    largest = 0
    for block in range(starts.size - 1):
        largest = max(largest, starts[block + 1] - starts[block])
    capacity = largest * n_classes * 9 + 1
    score = np.empty(capacity, dtype=np.float64)
    pix = np.empty(capacity, dtype=np.int64)
    cls = np.empty(capacity, dtype=np.int64)
    count = np.empty((largest, n_classes), dtype=np.int64)  # n_h of the cell's pool pixels
    changed = np.empty(largest, dtype=np.int64)  # n_changed of the cell's pool pixels
    near = np.empty(8, dtype=np.int64)
    for block in range(starts.size - 1):
        local = pool[starts[block]:starts[block + 1]]  # ascending: searchsorted finds them
        c = cell[local[0]]
        changed[:local.size] = 0
        size = _cell_pairs(local, c, p, pixels, position, current, source, known, demand,
                           width, factor, bonus, count, score, pix, cls)
        left = demand[c].sum()  # pixels still to convert
        while size > 0 and left > 0:
            x, h, s = pix[0], cls[0], score[0]
            size = _pop(score, pix, cls, size)
            if moved[x] or demand[c, h] == 0 or supply[c, source[x]] == 0:
                continue
            m = np.searchsorted(local, x)
            if s != _pair_score(p, x, h, source, known, bonus, count[m, h], changed[m]):
                continue  # stale: a neighbour converted since; its newer entry ranks higher
            supply[c, source[x]] -= 1
            demand[c, h] -= 1
            left -= 1
            index[x] = current[x] = h
            moved[x] = True
            size = _converted(x, h, local, c, p, pixels, position, source, known, supply,
                              demand, moved, width, factor, bonus, count, changed, near,
                              score, pix, cls, size)


class ErrorTally:
    """Mean and max |map group fraction − target| over cells with land and a target,
    accumulated band by band (bands of whole coarse-cell rows)."""

    def __init__(self) -> None:
        self.total, self.count, self.max, self.cells = 0.0, 0, 0.0, 0

    def add(self, codes: np.ndarray, groups: Groups, *, factor: int, valid: np.ndarray,
            target: np.ndarray) -> None:
        fractions, n = map_group_fractions(codes, groups, factor=factor, valid=valid)
        self.add_fractions(fractions, n, target=target)

    def add_fractions(self, fractions: np.ndarray, n: np.ndarray, *, target: np.ndarray) -> None:
        """Add cells whose map fractions and valid-pixel counts (``map_group_fractions``)
        are already known."""
        use = (n > 0) & (np.asarray(target).sum(axis=0) > 0)
        diff = np.abs(fractions - target)[:, use]
        if diff.size:
            self.total += float(diff.sum())
            self.count += diff.size
            self.max = max(self.max, float(diff.max()))
            self.cells += int(use.sum())

    def merge(self, other: ErrorTally) -> None:
        """Add another band's tally (merge bands in row order for reproducible sums)."""
        self.total += other.total
        self.count += other.count
        self.max = max(self.max, other.max)
        self.cells += other.cells

    def result(self) -> dict[str, float]:
        mae = self.total / self.count if self.count else 0.0
        return {"mae": mae, "max": self.max, "cells": self.cells}


def conservation_error(
    codes: np.ndarray, groups: Groups, *, factor: int, valid: np.ndarray, target: np.ndarray
) -> dict[str, float]:
    """Mean and max |map group fraction − target| over cells with land and a target."""
    tally = ErrorTally()
    tally.add(codes, groups, factor=factor, valid=valid, target=target)
    return tally.result()


def offset_weight(year: int, anchor: int, *, decay_years: int | None) -> float:
    """Weight of the anchor offset in :func:`delta_target` for ``year``.

    1 without decay (the plain delta method); with ``decay_years`` it falls linearly
    from 1 at the anchor year to 0 (raw LUH) ``decay_years`` years away and stays 0.
    """
    if decay_years is None:
        return 1.0
    return max(0.0, 1.0 - abs(int(year) - int(anchor)) / decay_years)

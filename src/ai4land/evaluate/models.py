"""Which models and chains an evaluation runs (a pure function of the config).

Chains run as ``predict`` runs them: *forward* from the observed map of the year before
the test years through the test years, *backward* from the observed map of the year
after them down to the first test year, each where that start map is observed. With
neither (e.g. one observed map) the evaluation is *single-year*: no chain, no prior.
The workflow reads :func:`evaluated_models` for the report's captions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# chained and finalised like the U-Net: the same harmonisation target, exact counts
ALLOCATION_BASELINES = ("random_change", "neighbourhood_density", "gradient_boosting",
                        "smooth_coarse")
BASELINES = ("persistence", "coarse_majority", "random_allocation", *ALLOCATION_BASELINES)
MODELS = ("unet", "unet_raw", "unet_teacher_forced", *BASELINES)
SINGLE_YEAR_MODELS = ("unet", "unet_raw", "coarse_majority", "random_allocation",
                      "gradient_boosting", "smooth_coarse")
# models whose next prior is their own map (the others: the observed or start map)
CHAINED = ("unet", *ALLOCATION_BASELINES)


@dataclass
class Chain:
    """One chain: its direction, the observed map it starts from (None: single-year) and
    its years in the order they are predicted; ``scores`` and ``area`` are filled by
    the run."""

    name: str
    direction: int
    start: int | None
    years: list[int]
    scores: dict = field(default_factory=dict)
    area: dict = field(default_factory=dict)


def plan_chains(test_years: list[int], observed: list[int]) -> list[Chain]:
    """The forward and backward chains through ``test_years`` (observed, ascending) that
    have an observed start map; a single-year pseudo-chain (no start) if neither has."""
    chains = []
    if test_years[0] - 1 in observed:
        chains.append(Chain("forward", 1, test_years[0] - 1, list(test_years)))
    if test_years[-1] + 1 in observed:
        chains.append(Chain("backward", -1, test_years[-1] + 1, list(reversed(test_years))))
    return chains or [Chain("single-year", 1, None, list(test_years))]


def evaluated_models(config) -> list[str]:
    """The models ``ai4land evaluate`` scores for ``config`` (its observed and test years)."""
    observed = config.observed_years
    first, last = config.years.test
    years = [y for y in range(first, last + 1) if y in observed]
    single = years and plan_chains(years, observed)[0].start is None
    return list(SINGLE_YEAR_MODELS if single else MODELS)

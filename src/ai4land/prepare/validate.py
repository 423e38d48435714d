"""Cheap up-front checks of every input the prepare stage will read (no data are loaded)."""

from __future__ import annotations

from ai4land.errors import InputDataError
from ai4land.io.rasters import decode_years, latlon_axes, open_netcdf, require_variable
from ai4land.io.tiff import require_complete
from ai4land.prepare.coarse import coarse_path, required_years
from ai4land.prepare.static import LayerSource
from ai4land.prepare.target import _fine_grid, _open, cube_grids, fine_sources


def validate_inputs(config) -> dict:
    """Check files, variables, years, CRS and grid nesting, and that no fine map is
    truncated; raise the first problem found.

    Returns a short summary: fine years and grid, coarse grid, years held per scenario.
    """
    sources = fine_sources(config)
    years = sorted(sources)
    for year in years[1:]:  # the first is checked when opened below
        require_complete(sources[year], what="fine map")
    with _open(sources[years[0]]) as src:
        fine_full = _fine_grid(src, sources[years[0]])
    fine, coarse, factor, _ = cube_grids(config, fine_full, fine_path=sources[years[0]])

    coarse_cfg = config.datasets.coarse
    held: dict[str, list[int]] = {}
    for scenario in ["historical", *config.scenarios]:
        path = coarse_path(config, scenario)
        with open_netcdf(path) as ds:
            _, file_years = decode_years(ds, path=path,
                                         units=coarse_cfg.time_units_of(scenario))
            for name in coarse_cfg.variables:
                require_variable(ds, name, path=path)
            latlon_axes(ds, path=path)
        held[scenario] = [int(file_years.min()), int(file_years.max())]
        missing = sorted(set(required_years(config, scenario)) - {int(y) for y in file_years})
        if missing:
            raise InputDataError(
                f"{path}: lacks year(s) {missing[0]}..{missing[-1]} needed for scenario "
                f"{scenario!r}; fix years.backward/forward/observed or the file"
            )
    if coarse_cfg.water_variable:
        path = coarse_cfg.static or coarse_cfg.historical
        with open_netcdf(path) as ds:
            require_variable(ds, coarse_cfg.water_variable, path=path)

    for layer in config.datasets.static:
        LayerSource(layer).close()

    covered = {y for first, last in held.values() for y in range(first, last + 1)}
    for name in ("train", "test"):
        first, last = getattr(config.years, name)
        lacking = [y for y in range(first, last + 1) if y not in covered]
        if lacking:
            raise InputDataError(
                f"{coarse_cfg.historical}: no coarse file holds year(s) "
                f"{lacking[0]}..{lacking[-1]} "
                f"of years.{name}; shorten years.{name} or add a scenario file covering them"
            )
    return {
        "fine_years": [years[0], years[-1]],
        "fine_grid": fine.to_dict(),
        "coarse_grid": coarse.to_dict(),
        "factor": factor,
        "coarse_years": held,
    }

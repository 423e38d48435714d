"""The ``prepare`` stage: validate inputs and build the analysis-ready cube.

Run in this order (each step reads what the previous one wrote):

1. ``prepare_target(config)``   fine maps -> ``target.zarr`` and ``grids.json``
2. ``prepare_static(config)``   static layers -> ``static.zarr`` (needs target.zarr)
3. ``prepare_coarse(config, scenario=...)``  one per scenario -> ``coarse/{scenario}.zarr``
   (needs grids.json and target.zarr; uses static.zarr's land mask when present)
"""

from ai4land.prepare.coarse import prepare_coarse
from ai4land.prepare.static import prepare_static
from ai4land.prepare.target import prepare_target
from ai4land.prepare.validate import validate_inputs

__all__ = ["prepare_coarse", "prepare_static", "prepare_target", "validate_inputs"]

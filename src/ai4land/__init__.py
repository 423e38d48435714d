"""ai4land: downscale coarse land-use scenarios to annual 1 km land-use maps."""

__version__ = "0.1.0"

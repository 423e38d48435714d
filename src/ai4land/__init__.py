"""ai4land: downscale coarse land-use scenarios to annual 1 km land-use maps."""

__version__ = "0.1.0"
__all__ = ["Emulator", "__version__"]


def __getattr__(name: str):
    """``ai4land.Emulator``, imported on first use: ``import ai4land`` stays cheap (no
    torch, no xarray) for the CLI's ``--help`` and for scripts that need the version."""
    if name == "Emulator":
        from ai4land.emulator.core import Emulator

        return Emulator
    raise AttributeError(f"module 'ai4land' has no attribute {name!r}")

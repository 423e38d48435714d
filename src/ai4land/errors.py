"""The small exception hierarchy of ai4land.

Every error a user can cause (bad config, bad input file, failed download) is an
``Ai4landError``; the CLI prints it as one line and exits non-zero. Anything else is a
bug and keeps its traceback.
"""


class Ai4landError(Exception):
    """Base class of all errors caused by configuration or input data."""


class ConfigError(Ai4landError):
    """The configuration file is invalid."""


class InputDataError(Ai4landError):
    """An input file is missing, unreadable or holds invalid values."""


class GridError(InputDataError):
    """Two rasters that must share or nest grids do not."""


class DownloadError(Ai4landError):
    """A download failed or its content did not verify."""


class ModelCardError(Ai4landError):
    """A trained model does not fit the data it is applied to."""


class OutputError(Ai4landError):
    """An output location cannot be written."""

"""The trained emulator on a user's own scenarios: :class:`Emulator` (in
:mod:`~ai4land.emulator.core`), the HTTP service (:mod:`~ai4land.emulator.service`) and the
aggregation of fine maps to coarse fractions (:mod:`~ai4land.emulator.aggregate`)."""

from ai4land.emulator.core import Emulator

__all__ = ["Emulator"]

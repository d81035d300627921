"""kafka-python's two CRC-32C configurations: the ``crc32c`` C extension (hoptrace's default install) and pure Python.

kafka-python checks and computes record-batch CRCs with the ``crc32c`` package when it can
import it (``kafka/record/util.py``), else with its own pure-Python CRC. A child process gets
the pure-Python one without uninstalling anything: a shim folder put first on its
``PYTHONPATH`` holds a ``crc32c`` package whose import raises ImportError, exactly as if the
extension were not installed. ``active()``, called inside a Kafka client, says which CRC
kafka-python really uses; every Kafka client reports it and the hop checks it (a run that
measured the wrong configuration fails instead of being mislabelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SHIM = 'raise ImportError("crc32c is hidden by the hoptrace benchmark: kafka-python falls back to its pure-Python CRC")\n'
"""The whole ``crc32c/__init__.py`` of the shim."""
EXTENSION, PURE_PYTHON = "crc32c", "pure-python"
"""What ``active()`` answers."""


@dataclass(frozen=True)
class CrcConfig:
    """One way kafka-python computes CRCs in the benchmark's Kafka clients."""

    key: str
    """``crc32c`` or ``pure``: also the suffix telling apart topics and sections."""
    expected: str
    """What ``active()`` must answer in the clients: ``EXTENSION`` or ``PURE_PYTHON``."""
    section_suffix: str
    """Appended to the Kafka sections' names (empty for the default install)."""
    description: str

    def path_first(self, folder: Path) -> list[Path]:
        """Folders to put first on a client's ``PYTHONPATH`` (the shim, made in FOLDER, for the pure-Python CRC)."""
        if self.expected == EXTENSION:
            return []
        package = folder / "pure-crc-shim" / "crc32c"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(SHIM)
        return [package.parent]


WITH_EXTENSION = CrcConfig("crc32c", EXTENSION, "", "with kafka-python's crc32c C extension (hoptrace's default install)")
PURE = CrcConfig("pure", PURE_PYTHON, "-pure-crc", "with kafka-python's pure-Python CRC (crc32c hidden by a shim first on PYTHONPATH)")
CONFIGS = (WITH_EXTENSION, PURE)


def active() -> str:
    """The CRC-32C implementation kafka-python uses in this process: ``crc32c`` or ``pure-python``."""
    from kafka.record import _crc32c, util

    return PURE_PYTHON if util.calc_crc32c.__defaults__[0] is _crc32c.crc else EXTENSION  # type: ignore[index]

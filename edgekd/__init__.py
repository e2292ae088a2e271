"""edgekd: make neural networks small and fast enough for edge devices, in one honest run."""

__version__ = "0.1.0"

from edgekd.api import compress, export_run, validate  # noqa: E402

__all__ = ["__version__", "compress", "export_run", "validate"]

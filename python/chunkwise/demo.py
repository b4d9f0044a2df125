"""``chunkwise demo``, kept importable here: the demo now lives in ``chunkwise.examples``."""

from chunkwise.errors import DemoError
from chunkwise.examples import run_demo

__all__ = ["DemoError", "run_demo"]

"""chunkwise: split coffea filesets into cacheable chunks, fast and exactly, and run them safely.

``split_fileset`` and ``hash_fileset`` are drop-in replacements for
``coffea.dataset_tools.split_fileset`` and ``hash_fileset``: the same results, digests and
exceptions, computed in Rust. ``run`` processes the chunks with a coffea Runner, caches each
chunk's output under its hash, keeps the good files of a chunk with a bad one, and reports
what fraction of each dataset made it into the result; ``status`` says how much of a fileset
is in the cache.

Importing chunkwise does not import coffea; ``run`` and ``RunReport`` load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chunkwise import _core
from chunkwise._core import hash_fileset, hash_filesets, split_fileset
from chunkwise.chunks import SplitOptions

if TYPE_CHECKING:  # pragma: no cover
    from chunkwise._coffea import load_processor, make_executor, make_runner, save_output
    from chunkwise.cache_status import StatusReport, status
    from chunkwise.report import ChunkRecord, RunReport
    from chunkwise.runner import run
    from chunkwise.splitdir import write_split
    from chunkwise.tag import open_cache

__all__ = [
    "ChunkRecord",
    "RunReport",
    "SplitOptions",
    "StatusReport",
    "hash_fileset",
    "hash_filesets",
    "load_processor",
    "make_executor",
    "make_runner",
    "open_cache",
    "run",
    "save_output",
    "split_fileset",
    "status",
    "write_split",
]

__version__: str = _core.__version__  # Cargo.toml's, compiled into the core

_LAZY = {
    "run": "chunkwise.runner",
    "RunReport": "chunkwise.report",
    "ChunkRecord": "chunkwise.report",
    "status": "chunkwise.cache_status",
    "open_cache": "chunkwise.tag",
    "load_processor": "chunkwise._coffea",
    "make_runner": "chunkwise._coffea",
    "make_executor": "chunkwise._coffea",
    "save_output": "chunkwise._coffea",
    "write_split": "chunkwise.splitdir",
    "StatusReport": "chunkwise.cache_status",
}


def __getattr__(name: str) -> Any:
    # ``run`` needs coffea, which takes seconds to import: load it only when asked for.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'chunkwise' has no attribute {name!r}")

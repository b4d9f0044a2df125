"""Type stubs for chunkwise's compiled core (``chunkwise._core``)."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["__version__", "hash_fileset", "hash_filesets", "split_fileset"]

_Fileset = Mapping[Any, Any]

__version__: str

def split_fileset(
    fileset: _Fileset,
    strategy: str | None = None,
    datasets: Iterable[Any] | Callable[[Any], object] | None = None,
    percentage: int | None = None,
    treename: str | None = None,
    *,
    files_per_chunk: int | None = None,
    events_per_chunk: int | None = None,
    stable: bool = False,
) -> list[dict[Any, Any]]:
    """Split a fileset into independent chunks, exactly as coffea 2026.9.0 does.

    Parameters
    ----------
    fileset : dict
        ``{dataset: {"files": {path: treename} | [path, ...], ...}}`` or
        ``{dataset: [path, ...]}``.
    strategy : {"by_dataset", None}
        ``"by_dataset"`` keeps each dataset in chunks of its own; ``None`` mixes all datasets
        in every chunk.
    datasets : list, tuple, str, callable or None
        Restrict the split to these datasets (in this order), or to the names for which the
        callable returns a true value.
    percentage : int or None
        Each chunk gets this percentage of every dataset's files; must divide 100.
    treename : str or None
        Tree name folded into list-form datasets, so that every chunk is self-contained.
    files_per_chunk : int or None
        Keyword-only, chunkwise's own: chunks of at most this many files of each dataset.
        Cannot be combined with ``percentage``.
    events_per_chunk : int or None
        Keyword-only, chunkwise's own: for a preprocessed fileset, whose file entries carry
        ``num_entries`` (as ``coffea.dataset_tools.preprocess`` writes them). Per dataset,
        files in sorted path order are packed greedily: a file joins the current bin unless
        that would take the bin past this many events, and a bin always takes at least one
        file, so a larger file stands alone. Bins compose with ``strategy`` and ``datasets`` as
        with ``files_per_chunk``. A file without a non-negative int ``num_entries`` raises
        ValueError naming it; so does combining this with ``percentage`` or
        ``files_per_chunk``. Values above 2**120 behave as 2**120.
    stable : bool, default False
        Keyword-only, chunkwise's own: content-defined chunks, for a fileset that will grow.
        Each dataset's files, in sorted path order, are cut where a fixed hash of (dataset,
        path) says, so that adding or removing a file changes only the chunks of at most two
        consecutive *stretches* (the one it falls in and the next) and every other chunk keeps
        its exact :func:`hash_fileset`, hence its cache entry. Needs ``files_per_chunk=N`` (or
        ``events_per_chunk=E``, weighing each file by its ``num_entries``): chunks then hold
        about N files (E events) on average, no chunk but a dataset's last holds fewer than
        ``max(1, N // 4)``, and none more than ``4 N`` (events: its files before the last hold
        at most ``4 E``). Implies ``strategy="by_dataset"``: stable chunks never mix datasets.
        Dataset names and paths must be ``str``. Sizes above 2**60 behave as 2**60. The rule is
        part of chunkwise's format (README, "Stable splitting"): the same fileset gives the
        same chunks on every platform and in every version. ``percentage`` raises ValueError,
        as does leaving out both sizes; a value that is not a bool raises TypeError.

    Returns
    -------
    list of dict
        The chunks, each a fileset. Files are sorted by path before slicing, so the chunks do
        not depend on insertion order.

    Examples
    --------
    >>> fs = {"ttbar": {"files": {"b.root": "Events", "a.root": "Events"}}}
    >>> split_fileset(fs, percentage=50)
    [{'ttbar': {'files': {'a.root': 'Events'}}}, {'ttbar': {'files': {'b.root': 'Events'}}}]
    >>> [len(c["ttbar"]["files"]) for c in split_fileset(fs, files_per_chunk=1, stable=True)]
    [1, 1]
    """

def hash_fileset(chunk: _Fileset) -> str:
    """Return the stable SHA-256 hex digest of a chunk, byte-identical to coffea's.

    Parameters
    ----------
    chunk : dict
        A self-contained chunk, as :func:`split_fileset` returns.

    Returns
    -------
    str
        64 lowercase hex digits. Dataset names, sorted file paths and tree names,
        ``treename``, ``preload`` and ``metadata`` enter the digest; other keys do not.

    Examples
    --------
    >>> hash_fileset({})
    '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a'
    """

def hash_filesets(chunks: Iterable[_Fileset]) -> list[str]:
    """Return ``[hash_fileset(c) for c in chunks]``, hashing in parallel without the GIL.

    The calling thread reads the chunks (with the GIL) and one worker thread per other core
    the process may use (its CPU affinity and quota) hashes them.

    Parameters
    ----------
    chunks : iterable of dict
        The chunks to hash.

    Returns
    -------
    list of str
        One digest per chunk, in order. The first chunk that cannot be hashed raises the
        exception :func:`hash_fileset` would raise for it.

    Examples
    --------
    >>> hash_filesets([{}, {}]) == [hash_fileset({})] * 2
    True
    """

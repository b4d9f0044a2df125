"""What chunkwise reads from a file itself, with uproot: its per-file sums (the generator
weights of its ``Runs`` tree and what the user's ``file_sums`` hook gives), and the entries of a
file that coffea made no work item from (empty, or bad?)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chunkwise.errors import BadWeightsError, add_note

# GEN_WEIGHTS, read_file_sums, and _probe (for chunkwise._coffea).
__all__ = ["GEN_WEIGHTS", "WEIGHT_GAPS", "_probe", "read_file_sums"]


#: NanoAOD's Runs tree holds, per luminosity block range, sums over all generated events of the
#: file before any selection; older NanoAOD versions end the names in "_" (nano_dy.root of
#: ../shared/samples does).
GEN_WEIGHTS = {
    "sumw": ("genEventSumw", "genEventSumw_"),
    "sumw2": ("genEventSumw2", "genEventSumw2_"),
    "gen_events": ("genEventCount", "genEventCount_"),
}


#: Why a file gave no generator weights, counted like a quantity (1 for each such file), so that
#: a report can say why a dataset's ``sumw`` is None; they never reach ``RunReport.sums``. The
#: ``chunkwise:`` prefix is reserved: a ``file_sums`` hook may not use it.
WEIGHT_GAPS = {
    "chunkwise:no_runs_tree": "no Runs tree",
    "chunkwise:no_gen_weights": "genEventSumw missing from the Runs tree",
    "chunkwise:data": "data (no genEventSumw, no genWeight)",
}


def read_file_sums(
    runner: Any,
    path: str,
    file_sums: Any = None,
    weights: bool = True,
    treename: str | None = None,
) -> dict[str, float]:
    """A file's per-file quantities: its generator weights, and what ``file_sums`` gives.

    Read just before the file is processed, so that they are cached with its output and cover
    exactly the files in the result.

    Parameters
    ----------
    runner : coffea.processor.Runner
        For the file format and the XRootD timeout.
    path : str
        The file.
    file_sums : callable, optional
        The user's hook: called with the file opened by uproot, returns ``{name: number}``
        (or None for nothing).
    weights : bool, optional
        Read the generator weights (default True). Reading a ``Runs`` tree's metadata with
        uproot takes a few milliseconds a file.
    treename : str, optional
        The events' tree (default ``Events``): a file without generator weights whose events
        have no ``genWeight`` either is data.

    Returns
    -------
    dict
        ``sumw``, ``sumw2`` and ``gen_events`` summed over the ``Runs`` tree when the file has
        one with those branches, else one of ``WEIGHT_GAPS`` (1: why not), and the hook's
        quantities.

    Raises
    ------
    Exception
        Whatever reading the file or the hook raised; a ``TypeError`` or ``ValueError`` for a
        hook that returns something else than finite numbers under new names.
    """
    if runner.format != "root" or (not weights and file_sums is None):
        return {}
    import uproot

    found: dict[str, float] = {}
    with uproot.open(path, timeout=runner.xrootdtimeout) as f:
        if weights:
            try:
                found.update(_gen_weights(f, path, treename or "Events"))
            except Exception as exc:
                add_note(
                    exc,
                    f"chunkwise: raised while reading the Runs tree of {path} for its generator "
                    "weights; weights=False (--no-weights) skips it",
                )
                raise
        if file_sums is not None:
            extra = file_sums(f)
            if extra is not None:
                found.update(_checked_sums(extra, file_sums))
    return found


def _gen_weights(f: Any, path: str, treename: str) -> dict[str, float]:
    import math

    runs = f["Runs"] if "Runs" in f else None
    if not hasattr(runs, "arrays"):  # neither a TTree nor an RNTuple
        return {"chunkwise:no_runs_tree": 1}
    names = set(runs.keys())
    branches = {
        key: next((b for b in candidates if b in names), None)
        for key, candidates in GEN_WEIGHTS.items()
    }
    if not all(branches.values()):
        events = f[treename] if treename in f else None
        has_weight = events is not None and "genWeight" in getattr(events, "keys", list)()
        return {"chunkwise:no_gen_weights" if has_weight else "chunkwise:data": 1}
    arrays = runs.arrays(list(branches.values()), library="np")
    found: dict[str, float] = {}
    for key, branch in branches.items():
        total = arrays[branch].sum()
        if not math.isfinite(float(total)):
            raise BadWeightsError(
                f"its Runs tree's {branch} sums to {float(total)}: the file cannot be normalized"
            )
        found[key] = int(total) if key == "gen_events" else float(total)
    return found


def _checked_sums(extra: Any, hook: Any) -> dict[str, float]:
    import math
    import numbers

    name = getattr(hook, "__qualname__", None) or repr(hook)
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"file_sums hook {name} returned {type(extra).__name__}; it must return a dict "
            "of {name: number} (or None)"
        )
    out: dict[str, float] = {}
    for key, value in extra.items():
        if not isinstance(key, str) or key in GEN_WEIGHTS or key.startswith("chunkwise:"):
            raise ValueError(
                f"file_sums hook {name} returned the key {key!r}; use str keys other than "
                f"{', '.join(GEN_WEIGHTS)} (chunkwise reads those from the Runs tree) that do "
                "not start with 'chunkwise:'"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"file_sums hook {name} returned {key!r}: {type(value).__name__}; values "
                "must be numbers"
            )
        if not math.isfinite(float(value)):
            raise ValueError(f"file_sums hook {name} returned {key!r}: {value}, not finite")
        out[key] = int(value) if isinstance(value, numbers.Integral) else float(value)
    return out


def _probe(runner: Any, path: str, treename: str | None) -> tuple[int | None, BaseException | None]:
    """Count a file's entries: coffea made no work item from it, so is it empty or bad?"""
    if runner.format != "root":
        return None, None
    import uproot

    try:
        with uproot.open(path, timeout=runner.xrootdtimeout) as f:
            return int(f[treename or "Events"].num_entries), None
    except Exception as exc:
        return None, exc

"""Draw the one-dimensional histograms of a coffea output to a PNG file.

Used by ``chunkwise run --plot`` and ``chunkwise demo``. A histogram is drawn when it has exactly
one axis that is not a category axis; its first category axis (``dataset`` in most processors)
becomes one line per category, and any further category axes are summed over. Each histogram
gets its own panel.

matplotlib, mplhep and hist are imported inside :func:`plot_histograms`, with the non-interactive
Agg backend, so importing this module is cheap and no display is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from chunkwise.atomic import atomic_write

__all__ = ["find_histograms", "plot_histograms"]


def _is_category(axis: Any) -> bool:
    import hist

    return isinstance(axis, (hist.axis.StrCategory, hist.axis.IntCategory))


def find_histograms(output: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(name, histogram)`` for each drawable histogram in ``output``.

    Parameters
    ----------
    output : object
        A coffea output: a histogram, or a mapping (possibly nested) that holds histograms.
    prefix : str, optional
        Prepended to the names, joined with ``/``.

    Yields
    ------
    tuple of (str, hist.Hist)
        The key path and the histogram, for every ``hist.Hist`` with exactly one
        non-category axis.

    Examples
    --------
    >>> [name for name, _ in find_histograms(report.output)]  # doctest: +SKIP
    ['MET']
    """
    import hist

    if isinstance(output, hist.Hist):
        if sum(not _is_category(ax) for ax in output.axes) == 1:
            yield prefix or "histogram", output
        return
    if isinstance(output, Mapping):
        for key in sorted(output, key=str):
            name = f"{prefix}/{key}" if prefix else str(key)
            yield from find_histograms(output[key], name)


def _draw(ax: Any, name: str, h: Any, rename: Mapping[str, str]) -> None:
    import mplhep

    value_axes = [a for a in h.axes if not _is_category(a)]
    category_axes = [a for a in h.axes if _is_category(a)]
    value_axis = value_axes[0]
    # Sum over every category axis but the first, which becomes the legend.
    for extra in category_axes[1:]:
        h = h.project(*[a.name for a in h.axes if a.name != extra.name])
    if category_axes:
        first = category_axes[0]
        labels = [rename.get(str(c), str(c)) for c in first]
        if labels:
            stacks = [h[{first.name: c}] for c in first]
            mplhep.histplot(stacks, ax=ax, label=labels, histtype="step", flow="none")
            ax.legend(title=first.label or first.name)
    else:
        mplhep.histplot(h, ax=ax, histtype="step", flow="none")
    ax.set_xlabel(value_axis.label or value_axis.name)
    ax.set_ylabel("Events")
    ax.set_title(name)


def plot_histograms(
    output: Any,
    path: str | os.PathLike[str],
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """Draw every drawable histogram of ``output`` into one PNG file.

    The file is written to a temporary name in the same directory and then renamed, so ``path``
    is either the complete new image or untouched.

    Parameters
    ----------
    output : object
        A coffea output, such as ``RunReport.output``.
    path : str or os.PathLike
        The PNG file to write; its directory must exist.
    title : str, optional
        A title over all panels.
    labels : mapping, optional
        Legend text for categories, e.g. ``{"TTbar": "TTbar (80% of files)"}``; categories not
        in it are shown by name.

    Returns
    -------
    list of str
        The names of the histograms drawn; empty (and nothing written) when there are none.

    Examples
    --------
    >>> plot_histograms(report.output, "met.png", title="MET per dataset")  # doctest: +SKIP
    ['MET']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = list(find_histograms(output))
    if not found:
        return []
    n = len(found)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.8 * nrows), squeeze=False)
    try:
        for ax, (name, h) in zip(axes.flat, found, strict=False):
            _draw(ax, name, h, labels or {})
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return [name for name, _ in found]

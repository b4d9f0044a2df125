"""Draw the one-dimensional histograms of a coffea output as a HEP plot (PNG, PDF or SVG).

Used by ``chunkwise run --plot`` and ``chunkwise demo``. A histogram is drawn when it has exactly
one axis that is not a category axis; its first category axis (``dataset`` in most processors)
becomes one line per category, and any further category axes are summed over. Each histogram
gets its own panel, in mplhep's style of an experiment (CMS by default) with its label, the
luminosity when given, a y label from the bin width ("Events / 2 GeV"), the overflow drawn as
an extra bin, and each dataset's completeness in the legend. Histograms that are not 1D are
reported back, not drawn.

Nothing global changes: the figure is a plain ``matplotlib.figure.Figure`` on an Agg canvas
(pyplot's figure manager and the backend are left alone) and the style applies only inside a
``matplotlib.style.context``. matplotlib, mplhep and hist are imported inside the functions, so
importing this module is cheap and no display is needed.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.atomic import atomic_write

__all__ = [
    "EXPERIMENTS",
    "PLOT_SUFFIXES",
    "PlotResult",
    "find_histograms",
    "plot_histograms",
    "y_label",
]

#: The file types ``plot_histograms`` writes, chosen by the suffix of the path.
PLOT_SUFFIXES: tuple[str, ...] = (".png", ".pdf", ".svg")

#: The experiments whose mplhep style and label ``plot_histograms`` can use.
EXPERIMENTS: tuple[str, ...] = ("CMS", "ATLAS", "LHCb", "ALICE")

# A unit at the end of an axis label: anything in square brackets ("MET [GeV]"), or a unit-like
# word in parentheses ("p_T (GeV)"), so that "MET (corrected)" is not taken for a unit.
_UNIT_BRACKETS = re.compile(r"\[\s*([^\[\]]+?)\s*\]\s*$")
_UNIT_PARENTHESES = re.compile(
    r"\(\s*((?:[kMGTmμu]?eV|rad|mrad|deg|[kcmnμu]?m|[mnpμu]?s|ps|ns|fs)(?:\s*/\s*c\^?2?)?)\s*\)\s*$"
)


@dataclass(frozen=True)
class PlotResult:
    """What :func:`plot_histograms` drew.

    Attributes
    ----------
    path : pathlib.Path or None
        The file written, or None when there was nothing to draw (no file is written then).
    drawn : list of str
        The names (key paths, joined with ``/``) of the histograms drawn, one panel each.
    not_drawn : dict of str to str
        Histograms found but not drawn because they are not 1D: name -> dimension, e.g.
        ``{"jet_eta_phi": "2D"}``. A histogram with only category axes is ``"0D"``.
    """

    path: Path | None
    drawn: list[str] = field(default_factory=list)
    not_drawn: dict[str, str] = field(default_factory=dict)

    def note(self) -> str | None:
        """One line naming the histograms that were not drawn, or None when there are none.

        Examples
        --------
        >>> PlotResult(None, [], {"jet_eta_phi": "2D"}).note()
        'not drawn (not 1D): jet_eta_phi (2D)'
        """
        if not self.not_drawn:
            return None
        names = ", ".join(f"{name} ({dim})" for name, dim in self.not_drawn.items())
        return f"not drawn (not 1D): {names}"


def _is_category(axis: Any) -> bool:
    import hist

    return isinstance(axis, (hist.axis.StrCategory, hist.axis.IntCategory))


def _n_value_axes(h: Any) -> int:
    return sum(not _is_category(ax) for ax in h.axes)


def _all_histograms(output: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    import boost_histogram
    import hist

    if isinstance(output, boost_histogram.Histogram):
        yield prefix or "histogram", output if isinstance(output, hist.Hist) else hist.Hist(output)
        return
    if isinstance(output, Mapping):
        for key in sorted(output, key=str):
            name = f"{prefix}/{key}" if prefix else str(key)
            yield from _all_histograms(output[key], name)


def find_histograms(output: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(name, histogram)`` for each drawable (1D) histogram in ``output``.

    Parameters
    ----------
    output : object
        A coffea output: a histogram, or a mapping (possibly nested) that holds histograms.
    prefix : str, optional
        Prepended to the names, joined with ``/``.

    Yields
    ------
    tuple of (str, hist.Hist)
        The key path and the histogram, for every histogram with exactly one non-category
        axis. The others are named in :attr:`PlotResult.not_drawn` by :func:`plot_histograms`.

    Examples
    --------
    >>> [name for name, _ in find_histograms(report.output)]  # doctest: +SKIP
    ['MET']
    """
    for name, h in _all_histograms(output, prefix):
        if _n_value_axes(h) == 1:
            yield name, h


def _format_number(value: float) -> str:
    """2.0 -> "2", 2.5 -> "2.5", 0.1 (from 0.30000000000000004 - 0.2) -> "0.1"."""
    import numpy as np

    return np.format_float_positional(float(f"{value:.6g}"), trim="-")


def _unit(label: str) -> str | None:
    for pattern in (_UNIT_BRACKETS, _UNIT_PARENTHESES):
        match = pattern.search(label)
        if match:
            return match.group(1)
    return None


def y_label(axis: Any) -> str:
    """The y label for counts over ``axis``: ``"Events / 2 GeV"``, ``"Events / bin"``, ...

    Parameters
    ----------
    axis : hist axis
        The histogram's one non-category axis.

    Returns
    -------
    str
        ``"Events / <width> <unit>"`` when the bins have one width and the axis label ends in a
        unit in brackets (``"MET [GeV]"``) or parentheses (``"p_T (GeV)"``);
        ``"Events / <width>"`` for one width and no unit; ``"Events / bin"`` for bins of
        different widths (a ``Variable`` axis, or a ``Regular`` one with a transform);
        ``"Events"`` for an ``Integer`` or ``Boolean`` axis, whose bins are values, not ranges.

    Examples
    --------
    >>> import hist
    >>> y_label(hist.axis.Regular(50, 0, 100, label="MET [GeV]"))
    'Events / 2 GeV'
    >>> y_label(hist.axis.Variable([0, 10, 30, 100], label="MET [GeV]"))
    'Events / bin'
    >>> y_label(hist.axis.Regular(48, -2.4, 2.4, label="eta"))
    'Events / 0.1'
    """
    import hist
    import numpy as np

    if isinstance(axis, (hist.axis.Integer, hist.axis.Boolean)):
        return "Events"
    widths = np.diff(np.asarray(axis.edges, dtype=float))
    if len(widths) == 0 or not np.all(np.isfinite(widths)):
        return "Events"
    if not np.allclose(widths, widths[0], rtol=1e-6, atol=0.0):
        return "Events / bin"
    width = _format_number(widths[0])
    unit = _unit(str(axis.label or ""))
    return f"Events / {width} {unit}" if unit else f"Events / {width}"


def _completeness_text(fraction: float) -> str:
    """0.833 -> "83% of files"; never rounds an incomplete dataset up to 100% or down to 0%."""
    percent = round(fraction * 100)
    if fraction < 1 and percent >= 100:
        return ">99% of files"
    if fraction > 0 and percent == 0:
        return "<1% of files"
    return f"{percent}% of files"


def _legend_label(
    category: Any, rename: Mapping[str, str], completeness: Mapping[str, float]
) -> str:
    text = rename.get(str(category), str(category))
    fraction = completeness.get(str(category))
    if fraction is not None and fraction < 1:
        text = f"{text} ({_completeness_text(fraction)})"
    return text


def _flow(axis: Any) -> str:
    """mplhep's ``flow``: draw the under/overflow as extra bins when the axis has them."""
    traits = getattr(axis, "traits", None)
    if traits is not None and (traits.underflow or traits.overflow):
        return "show"
    return "none"


def _lumi_text(lumi: float | None, com: float | None) -> str:
    parts = []
    if lumi is not None:
        if lumi < 1:
            parts.append(f"{_format_number(lumi * 1000)} pb$^{{-1}}$")
        else:
            parts.append(f"{_format_number(lumi)} fb$^{{-1}}$")
    if com is not None:
        parts.append(f"({_format_number(com)} TeV)")
    return " ".join(parts)


def _steps(ax: Any) -> list[Any]:
    """The step histograms drawn on ``ax`` (mplhep draws each as a ``StepPatch``)."""
    from matplotlib.patches import StepPatch

    return [patch for patch in ax.patches if isinstance(patch, StepPatch)]


def _weighted_storages() -> tuple[Any, ...]:
    import boost_histogram

    return (boost_histogram.storage.Weight, boost_histogram.storage.WeightedMean)


def _draw(
    ax: Any,
    name: str,
    h: Any,
    *,
    several: bool,
    rename: Mapping[str, str],
    completeness: Mapping[str, float],
    experiment: str,
    text: str,
    lumi: float | None,
    com: float | None,
) -> None:
    import mplhep
    import numpy as np

    value_axis = next(a for a in h.axes if not _is_category(a))
    category_axes = [a for a in h.axes if _is_category(a)]
    # Sum over every category axis but the first, which becomes the legend.
    for extra in category_axes[1:]:
        h = h.project(*[a.name for a in h.axes if a.name != extra.name])
    style = dict(
        histtype="step",
        flow=_flow(value_axis),
        linewidth=2,
        # Error bars only where the histogram tracks them (weighted storage): the variance of
        # a plain count is lost when coffea adds histograms, so drawing it would be arbitrary.
        yerr=None if h.storage_type in _weighted_storages() else False,
    )
    if category_axes and len(category_axes[0]) > 0:
        first = category_axes[0]
        stacks = [h[{first.name: c}] for c in first]
        labels = [_legend_label(c, rename, completeness) for c in first]
        mplhep.histplot(stacks, ax=ax, label=labels, **style)
        # With several panels, the histogram's name heads its legend (there are no titles).
        ax.legend(title=name if several else None, loc="upper right")
    else:
        if category_axes:  # a category axis with no categories: nothing was filled
            h = h.project(value_axis.name)
        mplhep.histplot(h, ax=ax, label=name, **style)
        ax.legend(loc="upper right")
    ax.set_xlabel(value_axis.label or value_axis.name)
    ax.set_ylabel(y_label(value_axis))
    # Headroom for the labels that some experiments put inside the axes, then room above the
    # tallest line for the legend, so that nothing overlaps.
    steps = [step.get_data() for step in _steps(ax)]
    tallest = max((float(np.max(s.values, initial=0.0)) for s in steps), default=0.0)
    ax.set_ylim(0, tallest * 1.35 if tallest > 0 else 1.0)
    if steps:
        # The x axis starts and ends at the outer bin edges, but leaves half a bin beyond a flow
        # bin, so that its far side and its label (">100") are not lost in the frame.
        low, high = min(s.edges[0] for s in steps), max(s.edges[-1] for s in steps)
        step = steps[0].edges
        if low < value_axis.edges[0]:
            low -= 0.5 * (step[1] - step[0])
        if high > value_axis.edges[-1]:
            high += 0.5 * (step[-1] - step[-2])
        ax.set_xlim(low, high)
    # Room above the tallest line for the legend, so that they do not overlap.
    mplhep.yscale_legend(ax)
    # scilocator_adjust=False: mplhep 1.3 measures the y axis' offset text against pyplot's
    # current axes (plt.gca()), which would open a pyplot figure behind the caller's back.
    getattr(mplhep, experiment.lower()).label(
        text=text, data=True, rlabel=_lumi_text(lumi, com), scilocator_adjust=False, ax=ax
    )


def _style(experiment: str) -> Any:
    import mplhep

    return {
        "CMS": mplhep.style.CMS,
        "ATLAS": mplhep.style.ATLAS,
        "LHCb": mplhep.style.LHCb2,
        "ALICE": mplhep.style.ALICE,
    }[experiment]


def plot_histograms(
    output: Any,
    path: str | os.PathLike[str],
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    completeness: Mapping[str, float] | None = None,
    lumi: float | None = None,
    com: float | None = None,
    experiment: str = "CMS",
    text: str = "Private Work",
) -> PlotResult:
    """Draw every 1D histogram of ``output`` into one PNG, PDF or SVG file.

    Each histogram gets a panel in the experiment's mplhep style, with its label and the
    luminosity when given; the y label comes from the bin width ("Events / 2 GeV"), the
    overflow (and underflow) is drawn as an extra bin marked ">100", and an incomplete dataset
    says so in the legend ("DYJets (83% of files)"). No global matplotlib state changes: the
    backend, pyplot's figures and ``matplotlib.rcParams`` are the same after the call.

    The file is written to a temporary name in the same directory and then renamed, so ``path``
    is either the complete new image or untouched.

    Parameters
    ----------
    output : object
        A coffea output, such as ``RunReport.output``.
    path : str or os.PathLike
        The file to write, ending in ``.png``, ``.pdf`` or ``.svg`` (the suffix chooses the
        format); its directory must exist.
    title : str, optional
        One title over the figure. Panels have no titles of their own: with several panels,
        each histogram's name heads its legend.
    labels : mapping, optional
        Legend text for categories, e.g. ``{"TTbar": "t#bar{t}"}``; categories not in it are
        shown by name.
    completeness : mapping, optional
        Fraction of each dataset's files in the output, as ``RunReport.completeness``; a
        dataset below 1 gets e.g. " (83% of files)" after its legend text.
    lumi : float, optional
        Integrated luminosity in fb⁻¹, shown above the top right corner (below 1 fb⁻¹ it is
        shown in pb⁻¹).
    com : float, optional
        Centre-of-mass energy in TeV, shown after the luminosity, e.g. "(13.6 TeV)".
    experiment : {"CMS", "ATLAS", "LHCb", "ALICE"}, optional
        Whose mplhep style and label to use; CMS by default.
    text : str, optional
        The words after the experiment's name, "Private Work" by default; e.g.
        "Simulation Private Work" or "Preliminary".

    Returns
    -------
    PlotResult
        The path written (None when no histogram is 1D: nothing is written then), the names
        drawn, and the names of the histograms that are not 1D, with ``note()`` to say so.

    Raises
    ------
    ValueError
        If the suffix of ``path`` or ``experiment`` is not one of those above, or ``lumi`` or
        ``com`` is not a positive number.

    Examples
    --------
    >>> result = plot_histograms(
    ...     report.output, "met.pdf", completeness=report.completeness, lumi=138, com=13
    ... )  # doctest: +SKIP
    >>> result.drawn, result.note()  # doctest: +SKIP
    (['MET'], 'not drawn (not 1D): jet_eta_phi (2D)')
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise ValueError(
            f"cannot plot to {str(path)!r}: give a file name ending in "
            f"{', '.join(PLOT_SUFFIXES[:-1])} or {PLOT_SUFFIXES[-1]}"
        )
    by_upper = {name.upper(): name for name in EXPERIMENTS}
    if str(experiment).upper() not in by_upper:
        raise ValueError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {experiment!r}")
    experiment = by_upper[str(experiment).upper()]
    for option, value in (("lumi", lumi), ("com", com)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} must be a positive number, got {value!r}")

    found = list(_all_histograms(output))
    drawable = [(name, h) for name, h in found if _n_value_axes(h) == 1]
    not_drawn = {name: f"{_n_value_axes(h)}D" for name, h in found if _n_value_axes(h) != 1}
    if not drawable:
        return PlotResult(None, [], not_drawn)

    with _figure(
        drawable,
        title=title,
        rename=labels or {},
        completeness=completeness or {},
        experiment=experiment,
        text=text,
        lumi=lumi,
        com=com,
    ) as fig:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=suffix[1:], dpi=100)
    return PlotResult(path, [name for name, _ in drawable], not_drawn)


@contextlib.contextmanager
def _figure(
    drawable: list[tuple[str, Any]], *, title: str | None, experiment: str, **options: Any
) -> Iterator[Any]:
    """The figure of ``drawable``, inside the experiment's style (save it before leaving)."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(drawable)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    with matplotlib.style.context(_style(experiment)):
        width, height = matplotlib.rcParams["figure.figsize"]
        fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
        FigureCanvasAgg(fig)  # an Agg canvas of its own: no pyplot, no backend switch
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, (name, h) in zip(axes.flat, drawable, strict=False):
            _draw(ax, name, h, several=n > 1, experiment=experiment, **options)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        yield fig

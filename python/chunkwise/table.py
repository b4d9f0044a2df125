"""Plain-text tables for the run summary, ``status`` and the demo."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> str:
    """Lay out ``rows`` under ``header`` in aligned columns, with a rule under the header.

    Parameters
    ----------
    header : sequence of str
        The column names.
    rows : sequence of sequences of str
        The cells, one sequence per row, as long as ``header``.
    align : str, optional
        One letter per column, ``"l"`` (left) or ``"r"`` (right). The default puts the first
        column on the left and the others, usually numbers, on the right.

    Returns
    -------
    str
        The lines of the table, without a trailing newline or trailing spaces.

    Examples
    --------
    >>> print(format_table(("dataset", "files"), [("DY", "12"), ("TTbar", "3")]))
    dataset  files
    -------  -----
    DY          12
    TTbar        3
    """
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        laid = (
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(cells, widths, align, strict=True)
        )
        return "  ".join(laid).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])

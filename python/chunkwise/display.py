"""How a ``RunReport`` and a ``StatusReport`` look in Jupyter: an HTML table per dataset, the bad
files with their errors, the notes, and what to do next.

Plain HTML with inline styles (no script, no stylesheet), so it renders the same in JupyterLab,
the classic notebook, VS Code and a static export. Every text from a file, a path or an error is
escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["bad_files_html", "bar", "page", "table"]

#: The most bad files listed; the rest are counted.
MAX_LISTED = 20

_CELL = "padding:2px 8px;text-align:{align};border-bottom:1px solid #ddd"


def bar(fraction: float) -> str:
    """A completeness bar with its percentage: green when whole, orange when not."""
    width = max(0.0, min(1.0, fraction)) * 100
    colour = "#2e7d32" if fraction >= 1.0 else "#ef6c00"
    return (
        '<div style="display:flex;align-items:center;gap:6px">'
        f'<div style="width:80px;height:10px;background:#eee;border-radius:2px">'
        f'<div style="width:{width:.1f}%;height:10px;background:{colour};border-radius:2px">'
        f"</div></div><span>{fraction:.1%}</span></div>"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: Iterable[int] = ()) -> str:
    """An HTML table; the cells of the columns in ``raw`` are HTML already (a bar)."""
    keep = set(raw)

    def cell(tag: str, i: int, text: str) -> str:
        align = "left" if i == 0 else "right"
        body = text if i in keep else html.escape(text)
        return f'<{tag} style="{_CELL.format(align=align)}">{body}</{tag}>'

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return (
        f'<table style="border-collapse:collapse"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def bad_files_html(title: str, bad: Mapping[str, Mapping[str, str]]) -> str:
    """A list of ``dataset: path: error``, the first ``MAX_LISTED`` of them."""
    items = [(d, p, e) for d in sorted(bad) for p, e in sorted(bad[d].items())]
    if not items:
        return ""
    lines = "".join(
        f"<li><b>{html.escape(d)}</b>: <code>{html.escape(p)}</code>: {html.escape(e)}</li>"
        for d, p, e in items[:MAX_LISTED]
    )
    more = f"<li>and {len(items) - MAX_LISTED} more</li>" if len(items) > MAX_LISTED else ""
    return f"<p>{html.escape(title)} ({len(items)}):</p><ul>{lines}{more}</ul>"


def page(title: str, ok: bool, parts: Iterable[str], notes: Iterable[str], advice: str) -> str:
    """The whole view: a title (green when ``ok``), its parts, the notes and the advice."""
    colour = "#2e7d32" if ok else "#c62828"
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    notes_html = f"<p>Notes:</p><ul>{note_items}</ul>" if note_items else ""
    return (
        '<div class="chunkwise-report">'
        f'<p style="font-weight:bold;color:{colour}">{html.escape(title)}</p>'
        + "".join(parts)
        + notes_html
        + f"<p><i>Next:</i> {html.escape(advice)}</p></div>"
    )

"""The progress of a run: one bar over the files, with the chunks done and the bad files.

In a terminal it is a ``rich`` bar on stderr (stdout is for the summary). In a Jupyter kernel it
is one display, updated in place, so that a cell shows one live line rather than a scroll of
them (``rich`` would need ``ipywidgets`` there).
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "in_notebook"]

#: Seconds between two updates of a notebook's display (each is a message to the front end).
NOTEBOOK_REFRESH = 0.25


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython is then imported already)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Progress:
    """One bar over the files, with an ETA and the chunks done; a no-op when disabled.

    The bar advances as each file returns (the unit of work), so it moves within a chunk; the
    text says how many chunks are finished and how many files were bad.
    """

    def __init__(self, files: int, chunks: int, enabled: bool) -> None:
        self.files_total = files
        self.files_done = 0
        self.chunks_total = chunks
        self.chunks_done = 0
        self.bad = 0
        self._progress: Any = None
        self._display: Any = None
        self._start = self._shown = 0.0
        if not enabled or not files:
            return
        if in_notebook():
            from IPython.display import display

            self._display = display({"text/plain": self._line()}, raw=True, display_id=True)
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("chunkwise"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),  # stdout is for the summary
        )
        self._task = self._progress.add_task("files", total=files, counts=self._text())

    def _text(self) -> str:
        return f"{self.chunks_done}/{self.chunks_total} chunks, {self.bad} bad files"

    def _line(self) -> str:
        """The notebook's line: a bar of 30 cells, the counts and the time so far."""
        done = self.files_done / self.files_total if self.files_total else 1.0
        cells = round(30 * done)
        elapsed = time.monotonic() - self._start if self._start else 0.0
        return (
            f"chunkwise {'█' * cells}{'░' * (30 - cells)} {self.files_done}/{self.files_total} "
            f"files · {self._text()} · {elapsed:.0f} s"
        )

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._display is not None:
            self._display.update({"text/plain": self._line()}, raw=True)

    def files(self, n: int, bad: int = 0) -> None:
        """``n`` files returned (``bad`` of them bad)."""
        self.bad += bad
        self.files_done += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n, counts=self._text())
        if self._display is not None and time.monotonic() - self._shown >= NOTEBOOK_REFRESH:
            self._shown = time.monotonic()
            self._display.update({"text/plain": self._line()}, raw=True)

    def chunk(self, record: Any, files: int) -> None:
        """A chunk is finished; ``files`` of its files had not been counted yet (cached)."""
        self.chunks_done += 1
        self.files(files)

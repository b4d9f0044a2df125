"""Keep coffea's own per-chunk output out of chunkwise's report.

``chunkwise.run`` draws one progress bar over the chunks. Inside it, coffea would print a
"Preprocessing" and a "Processing" bar for every chunk (its IterativeExecutor draws them even
with ``status=False``) and a "Performed attempt n out of 4" warning for every retry of a bad
file, whose final error chunkwise reports anyway, and it repeats the same warning (a schema's
"Missing cross-reference", say) once per chunk. :func:`quiet_coffea` silences the bars and the
retry warnings and shows every other warning once, for the command line and the demo.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["mute_coffea_bars", "quiet_coffea"]


@contextlib.contextmanager
def mute_coffea_bars() -> Iterator[None]:
    """Silence coffea's own progress bars inside the ``with`` block.

    coffea 2026.9's IterativeExecutor draws its bars even with ``status=False`` (it passes
    ``disable`` to rich's ``add_task``, which ignores it), and every Runner call draws a
    "Preprocessing" and a "Processing" bar. They all go through ``coffea.util.coffea_console``,
    which rich can mute. Nesting is safe: each block restores what it found.

    Examples
    --------
    >>> with mute_coffea_bars():  # doctest: +SKIP
    ...     result = runner(chunk, processor_instance)
    """
    try:
        from coffea.util import coffea_console
    except ImportError:  # pragma: no cover - a coffea without it
        yield
        return
    before = coffea_console.quiet
    coffea_console.quiet = True
    try:
        yield
    finally:
        coffea_console.quiet = before


@contextlib.contextmanager
def quiet_coffea() -> Iterator[None]:
    """Silence coffea's progress bars and retry warnings inside the ``with`` block.

    Other warnings (from the processor, say) still show, each distinct message once.

    Examples
    --------
    >>> with quiet_coffea():  # doctest: +SKIP
    ...     report = chunkwise.run(fileset, processor_instance)
    """
    with mute_coffea_bars(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Performed attempt \d+ out of", UserWarning)
        show = warnings.showwarning
        seen: set[tuple[type, str]] = set()

        # Python's own once-per-location filter forgets what it showed whenever a library
        # enters warnings.catch_warnings(), which coffea does for every chunk.
        def show_once(message, category, *args, **kwargs):  # type: ignore[no-untyped-def]
            key = (category, str(message))
            if key not in seen:
                seen.add(key)
                show(message, category, *args, **kwargs)

        warnings.showwarning = show_once
        yield

"""A processor and a script for tests/test_run.py's crash and shared-cache tests.

``KillableMET`` is ``METProcessor`` that SIGKILLs its own process in ``process`` once the cache
directory named by ``CHUNKWISE_TEST_KILL_DIR`` holds ``CHUNKWISE_TEST_KILL_AFTER`` entries, so a
test can kill a run deterministically in the middle. Without those variables it is a plain
``METProcessor`` (and has the same cache tag in every process, since the tag follows the source).

Run as a script: ``python run_crash_child.py FILESET_JSON CACHE_DIR OUTPUT`` runs
``chunkwise.run`` with an IterativeExecutor and one file per chunk, and saves the merged output
to OUTPUT with ``coffea.util.save``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from chunkwise.examples import METProcessor


class KillableMET(METProcessor):
    """METProcessor that kills its process after a given number of cache entries exist."""

    def process(self, events: Any) -> Any:
        kill_dir = os.environ.get("CHUNKWISE_TEST_KILL_DIR")
        if kill_dir:
            after = int(os.environ["CHUNKWISE_TEST_KILL_AFTER"])
            done = sum(1 for p in Path(kill_dir).rglob("*.coffea"))
            if done >= after:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().process(events)


def runner() -> Any:
    """The Runner both the child and the test use: in-process, so SIGKILL stops everything."""
    import uproot
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    return processor.Runner(
        executor=processor.IterativeExecutor(retries=0),
        schema=NanoAODSchema,
        skipbadfiles=(OSError, uproot.exceptions.KeyInFileError),
        use_result_type=True,
    )


def main(argv: list[str]) -> int:
    from coffea.util import save

    # The class as ``run_crash_child.KillableMET``, not ``__main__.KillableMET``: the cache tag
    # names the class's module, and the test's process imports it under this name.
    from run_crash_child import KillableMET as processor_class

    import chunkwise.runner

    warnings.simplefilter("ignore")
    fileset_path, cache_dir, output_path = argv
    fileset = json.loads(Path(fileset_path).read_text())
    report = chunkwise.runner.run(
        fileset, processor_class(), runner(), files_per_chunk=1, cache=cache_dir, progress=False
    )
    save(report.output, output_path)
    print(json.dumps({"processed": report.n_processed, "cached": report.n_cached}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

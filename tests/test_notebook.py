"""chunkwise at home in Jupyter: the seed notebook's workflow, executed in a real kernel.

The notebook defines the seed's processor in a cell, runs the seed's loop with chunkwise's
``split_fileset`` and ``hash_fileset`` as drop-ins, then ``chunkwise.run`` with a cache, a rerun
from the cache, the plot and ``chunkwise.status``, on real NanoAOD files from
``../shared/samples`` with one broken path. The reports show as HTML tables, progress is one
live display, and nothing lands on stderr. The HTML is then rendered by a real browser
(Debian's ``chromium``, headless): the screenshot is not blank and the table's text is there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
pytestmark = pytest.mark.skipif(
    not (SAMPLES / "nano_dy.root").is_file(), reason="../shared/samples is not here"
)

CELLS = [
    # 1. The seed's processor, defined in a cell (it keeps its accumulator on self).
    """
import hist
import coffea.processor as processor
from coffea.nanoevents import schemas
from coffea.util import load, save

import chunkwise
from chunkwise import split_fileset, hash_fileset


class Processor(processor.ProcessorABC):
    def __init__(self):
        dataset_axis = hist.axis.StrCategory(name="dataset", label="", categories=[], growth=True)
        MET_axis = hist.axis.Regular(name="MET", label="MET [GeV]", bins=50, start=0, stop=100)
        self.output = processor.dict_accumulator({
            "MET": hist.Hist(dataset_axis, MET_axis),
            "cutflow": processor.defaultdict_accumulator(int),
        })

    def process(self, events):
        dataset = events.metadata["dataset"]
        MET = events.MET.pt
        self.output["cutflow"]["all events"] += len(MET)
        self.output["cutflow"]["number of chunks"] += 1
        self.output["MET"].fill(dataset=dataset, MET=MET)
        return self.output

    def postprocess(self, accumulator):
        pass
""",
    # 2. The seed's loop, with chunkwise's drop-ins and an on-disk cache keyed by the hash.
    """
import json, os
fileset = json.load(open("fileset.json"))
run = processor.Runner(
    executor=processor.FuturesExecutor(workers=2, status=False),
    schema=schemas.NanoAODSchema,
    skipbadfiles=True,
    use_result_type=True,
)
os.makedirs("seed_cache", exist_ok=True)
chunks = split_fileset(fileset, strategy="by_dataset", percentage=50)
result, failed = None, 0
for chunk in chunks:
    path = f"seed_cache/{hash_fileset(chunk)}.coffea"
    if os.path.exists(path):
        output = load(path)
    else:
        run_result = run(chunk, processor_instance=Processor())
        if not run_result.is_ok():
            failed += 1
            continue
        output = run_result.unwrap()
        save(output, path)
    if result is None:
        result = output
    else:
        result += output
print(len(chunks), "chunks,", failed, "failed")
""",
    # 3. chunkwise.run with a cache: the report is the cell's value.
    """
split = chunkwise.SplitOptions(strategy="by_dataset", percentage=50)
runner = processor.Runner(
    executor=processor.FuturesExecutor(workers=2, status=False),
    schema=schemas.NanoAODSchema,
)
report = chunkwise.run(fileset, Processor(), runner, split=split, cache="cache")
report
""",
    # 4. A rerun loads everything that succeeded from the cache.
    """
rerun = chunkwise.run(fileset, Processor(), runner, split=split, cache="cache")
assert rerun.file_counts["processed"] == 0, rerun.file_counts
assert rerun.file_counts["cached"] == report.file_counts["processed"], rerun.file_counts
rerun
""",
    # 5. The plot.
    """
artists = report.output["MET"].plot1d()
len(artists)
""",
    # 6. What is done, without running anything.
    """
status = chunkwise.status(
    fileset, "cache", split=split, processor_instance=Processor(), runner=runner
)
status
""",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    directory = tmp_path_factory.mktemp("notebook")
    files = {}
    for dataset, name in (("DY", "nano_dy"), ("Data", "nano_dimuon")):
        paths = {}
        for i in range(2):
            target = directory / f"{name}_{i}.root"
            shutil.copy(SAMPLES / f"{name}.root", target)
            paths[str(target)] = "Events"
        files[dataset] = {"files": paths}
    files["DY"]["files"][str(directory / "broken_link.root")] = "Events"  # no such file
    (directory / "fileset.json").write_text(json.dumps(files))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source.strip()) for source in CELLS]
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(directory)}},
    )
    client.execute()
    return notebook, directory


def _outputs(notebook: Any, cell: int, kind: str) -> list[dict[str, Any]]:
    return [o for o in notebook.cells[cell].outputs if o.output_type == kind]


def _html(notebook: Any, cell: int) -> str:
    (result,) = _outputs(notebook, cell, "execute_result")
    return result["data"]["text/html"]


def test_the_seed_loop_with_the_drop_ins_and_chunkwise_run_in_a_kernel(executed):
    notebook, _ = executed
    printed = [o["text"] for o in _outputs(notebook, 1, "stream") if o["name"] == "stdout"]
    assert printed == ["4 chunks, 1 failed\n"]  # the broken link's chunk is lost whole
    html = _html(notebook, 2)
    assert "chunkwise.run: INCOMPLETE" in html
    for text in ("DY", "Data", "completeness", "broken_link.root", "FileNotFoundError", "Next:"):
        assert text in html, text
    plain = _outputs(notebook, 2, "execute_result")[0]["data"]["text/plain"]
    assert plain.startswith("<RunReport INCOMPLETE: 2 datasets, 4/5 files") and len(plain) < 120
    # Progress is one display, updated in place; nothing is printed to stderr (no warnings).
    (bar,) = _outputs(notebook, 2, "display_data")
    assert bar["data"]["text/plain"].startswith("chunkwise █")
    assert "5/5 files" in bar["data"]["text/plain"]
    assert not [o for o in notebook.cells[2].outputs if o.get("name") == "stderr"]
    assert "chunks: 4 (0 processed, 3 cached" in _html(notebook, 3)  # the rerun
    (drawn,) = _outputs(notebook, 4, "execute_result")
    assert drawn["data"]["text/plain"] == "2"  # one histogram per dataset
    (figure,) = _outputs(notebook, 4, "display_data")
    assert "image/png" in figure["data"]
    status = _html(notebook, 5)
    assert "chunkwise.status: 1 chunks not complete" in status
    assert "Failed files (1)" in status and "broken_link.root" in status


def test_the_reports_render_as_tables_in_a_real_browser(executed):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    notebook, directory = executed
    from matplotlib.image import imread

    for cell, title in ((2, "chunkwise.run"), (5, "chunkwise.status")):
        page = directory / f"cell{cell}.html"
        page.write_text(f"<html><body>{_html(notebook, cell)}</body></html>")
        common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        png = directory / f"cell{cell}.png"
        subprocess.run(
            [*common, "--window-size=900,500", f"--screenshot={png}", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
        pixels = imread(png)[..., :3]
        inked = (pixels < 0.9).any(axis=-1).mean()  # the share of pixels that are not white
        assert 0.01 < inked < 0.5, inked
        assert pixels.std() > 0.05
        dom = subprocess.run(
            [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
        assert "<table" in dom and "</table>" in dom
        for word in (title, "completeness", "DY", "Data"):
            assert word in dom, word

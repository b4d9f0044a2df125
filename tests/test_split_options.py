"""The split options as one value, and a cache opened once.

``chunkwise.SplitOptions`` holds ``split_fileset``'s options for ``run`` and ``status``; the
options given one keyword each, as before, still work and say they are deprecated. A cache
opened with ``chunkwise.open_cache`` is given to ``run`` and ``status`` as it is: the processor
is fingerprinted once, and nothing of the cache is done twice.
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path
from typing import Any

import pytest

import chunkwise
import chunkwise.cache
from chunkwise.cache import ChunkCache
from chunkwise.chunks import make_chunks
from chunkwise.examples import METProcessor, make_demo_fileset

pytestmark = pytest.mark.filterwarnings("ignore:Missing cross-reference index")


@pytest.fixture(scope="module")
def fileset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_demo_fileset(tmp_path_factory.mktemp("files"))


def test_split_options_split_as_split_fileset_does(fileset: dict[str, Any]) -> None:
    for options in (
        {},
        {"percentage": 20},
        {"strategy": "by_dataset", "files_per_chunk": 2},
        {"datasets": ["TTbar"], "files_per_chunk": 3},
    ):
        assert chunkwise.SplitOptions(**options).split(fileset) == chunkwise.split_fileset(
            fileset, **options
        )
    assert chunkwise.SplitOptions(percentage=20).given() == ["percentage"]


def test_run_takes_split_and_the_old_keywords_warn(fileset: dict[str, Any]) -> None:
    split = chunkwise.SplitOptions(strategy="by_dataset", files_per_chunk=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = chunkwise.run(fileset, METProcessor(), split=split, progress=False)
    with pytest.warns(DeprecationWarning) as caught:
        old = chunkwise.run(
            fileset, METProcessor(), strategy="by_dataset", files_per_chunk=3, progress=False
        )
    (message,) = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert message == (
        "chunkwise.run(strategy=, files_per_chunk=...) is deprecated: pass "
        "split=chunkwise.SplitOptions(strategy='by_dataset', files_per_chunk=3)"
    )
    assert [r.hash for r in new.chunks] == [r.hash for r in old.chunks]
    assert len(new.chunks) == 4  # DYJets: 6 files in 2 chunks, TTbar: 5 in 2
    assert new.events == old.events and new.completeness == old.completeness


def test_split_given_twice_or_a_wrong_keyword_is_a_type_error(fileset: dict[str, Any]) -> None:
    split = chunkwise.SplitOptions(percentage=20)
    with pytest.raises(TypeError, match=r"give the split options once.*percentage"):
        chunkwise.run(fileset, METProcessor(), split=split, percentage=20)
    with pytest.raises(TypeError, match="run\\(\\) got an unexpected keyword argument 'cahce'"):
        chunkwise.run(fileset, METProcessor(), cahce="dir")
    chunks = make_chunks(fileset, split)
    with pytest.raises(ValueError, match="already a list of chunks, so percentage cannot apply"):
        make_chunks([c.fileset for c in chunks], split)


def test_status_takes_split_and_an_opened_cache(fileset: dict[str, Any], tmp_path: Path) -> None:
    split = chunkwise.SplitOptions(percentage=20)
    processor = METProcessor()
    cache = chunkwise.open_cache(tmp_path / "cache", processor)
    report = chunkwise.run(fileset, processor, split=split, cache=cache, progress=False)
    assert report.cache is cache
    by_value = chunkwise.status(
        fileset, tmp_path / "cache", split=split, processor_instance=processor
    )
    opened = chunkwise.status(fileset, cache, split=split)
    assert opened.summary() == by_value.summary()
    assert opened.overall.files_done == 9  # the two broken files are not done
    with pytest.warns(DeprecationWarning, match=r"chunkwise.status\(percentage=...\)"):
        old = chunkwise.status(fileset, cache, percentage=20)
    assert old.summary() == opened.summary()
    with pytest.raises(ValueError, match="opened ChunkCache.*leave tag unset"):
        chunkwise.status(fileset, cache, split=split, tag="other")


def test_run_given_an_opened_cache_fingerprints_and_opens_nothing_again(
    fileset: dict[str, Any], tmp_path: Path, opening_counts: collections.Counter[str]
) -> None:
    processor = METProcessor()
    cache = chunkwise.open_cache(tmp_path / "cache", processor)
    assert cache.prepare() == 0
    split = chunkwise.SplitOptions(percentage=20)
    chunkwise.run(fileset, processor, split=split, cache=cache, progress=False)
    assert opening_counts == {"tag": 1, "open": 1, "clean": 1}, opening_counts
    with pytest.raises(ValueError, match="opened ChunkCache.*leave cache_tag, force_tag unset"):
        chunkwise.run(fileset, processor, split=split, cache=cache, cache_tag="t", force_tag=True)


class _Scaled(METProcessor):
    """Another processor: its outputs differ, so its tag does."""

    def process(self, events: Any) -> Any:
        out = super().process(events)
        out["cutflow"]["scaled"] = 1
        return out


def test_an_opened_cache_refuses_a_processor_it_was_not_opened_for(
    fileset: dict[str, Any], tmp_path: Path, opening_counts: collections.Counter[str]
) -> None:
    split = chunkwise.SplitOptions(percentage=20)
    cache = chunkwise.open_cache(tmp_path / "cache", METProcessor())
    # Another instance of the same processor: fingerprinted again, and it agrees.
    chunkwise.run(fileset, METProcessor(), split=split, cache=cache, progress=False)
    assert opening_counts["tag"] == 2
    # Another processor would write its outputs under the first one's tag: refused.
    with pytest.raises(chunkwise.cache.CacheError, match="opened for another processor"):
        chunkwise.run(fileset, _Scaled(), split=split, cache=cache, progress=False)
    with pytest.raises(chunkwise.cache.CacheError, match="opened for another processor"):
        chunkwise.run(fileset, METProcessor(), split=split, cache=cache, weights=False)
    raw = ChunkCache(tmp_path / "cache", cache.tag)
    with pytest.raises(chunkwise.cache.CacheError, match="not opened with chunkwise.open_cache"):
        chunkwise.run(fileset, METProcessor(), split=split, cache=raw, progress=False)

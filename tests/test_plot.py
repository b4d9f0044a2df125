"""``plot_histograms`` and ``chunkwise run --plot``: a plot a physicist would show.

The plots are checked in the files written: the magic bytes of each format, and the text of an
SVG written with ``svg.fonttype = "none"`` (so its labels are ``<text>`` elements, not paths).
Where the drawing itself matters (the overflow bin, the titles), the figure's artists are read
through ``chunkwise.plot._figure``, the function ``plot_histograms`` saves. The demo's samples are
read back with uproot and coffea to check that their physics is recognizable.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import hist
import matplotlib
import numpy as np
import pytest
import uproot

from chunkwise import plot
from chunkwise.plot import PlotResult, plot_histograms, y_label

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore:Skipping bad file"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def met_hist() -> hist.Hist:
    """MET per dataset, 50 bins of 2 GeV in [0, 100), with events above 100 GeV (overflow)."""
    rng = np.random.default_rng(7)
    h = hist.Hist(
        hist.axis.StrCategory(["DYJets", "TTbar"], name="dataset"),
        hist.axis.Regular(50, 0, 100, name="MET", label="MET [GeV]"),
    )
    h.fill(dataset="DYJets", MET=rng.rayleigh(12, 5000))
    h.fill(dataset="TTbar", MET=rng.gamma(2.2, 30, 3000))
    return h


def svg_texts(path: Path) -> list[str]:
    """The text of every ``<text>`` element (tspans joined), unescaped."""
    texts = re.findall(r"<text[^>]*>(.*?)</text>", path.read_text(), re.S)
    return [html.unescape(re.sub(r"<[^>]+>|\s{2,}", "", t)).replace("\xa0", " ") for t in texts]


def plot_svg(output: Any, path: Path, **options: Any) -> tuple[PlotResult, list[str]]:
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        result = plot_histograms(output, path, **options)
    return result, svg_texts(path)


def figure_options(**overrides: Any) -> dict[str, Any]:
    options = dict(
        title=None,
        experiment="CMS",
        rename={},
        completeness={},
        text="Private Work",
        lumi=None,
        com=None,
    )
    options.update(overrides)
    return options


# ----------------------------------------------------------------------------- file formats


@pytest.mark.parametrize(
    ("name", "magic"),
    [("met.png", b"\x89PNG\r\n\x1a\n"), ("met.pdf", b"%PDF-"), ("MET.SVG", b"<?xml")],
)
def test_each_suffix_writes_its_format(tmp_path: Path, name: str, magic: bytes):
    result = plot_histograms({"MET": met_hist()}, tmp_path / name)
    data = (tmp_path / name).read_bytes()
    assert data.startswith(magic)
    if name.lower().endswith(".svg"):
        assert b"<svg" in data[:1000]
    assert result.path == tmp_path / name and result.drawn == ["MET"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


@pytest.mark.parametrize("name", ["met.jpg", "met", "met.png.txt"])
def test_other_suffixes_are_refused_before_drawing(tmp_path: Path, name: str):
    with pytest.raises(ValueError, match=r"\.png, \.pdf or \.svg"):
        plot_histograms({"MET": met_hist()}, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_bad_experiment_and_lumi_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="CMS, ATLAS, LHCb, ALICE"):
        plot_histograms({"MET": met_hist()}, tmp_path / "a.png", experiment="Belle")
    with pytest.raises(ValueError, match="lumi must be a positive number"):
        plot_histograms({"MET": met_hist()}, tmp_path / "a.png", lumi=-1.0)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- y label


@pytest.mark.parametrize(
    ("axis", "expected"),
    [
        (hist.axis.Regular(50, 0, 100, label="MET [GeV]"), "Events / 2 GeV"),
        (hist.axis.Regular(40, 0, 100, label="MET [GeV]"), "Events / 2.5 GeV"),
        (hist.axis.Regular(30, 0, 3, label="$\\Delta R$ [rad]"), "Events / 0.1 rad"),
        (hist.axis.Regular(10, 0.2, 1.2, label="p_T (GeV)"), "Events / 0.1 GeV"),
        (hist.axis.Regular(48, -2.4, 2.4, label="Muon $\\eta$"), "Events / 0.1"),
        (hist.axis.Regular(20, 0, 100, label="MET (corrected)"), "Events / 5"),
        (hist.axis.Variable([0, 10, 30, 100], label="MET [GeV]"), "Events / bin"),
        (hist.axis.Variable([0, 10, 20, 30], label="MET [GeV]"), "Events / 10 GeV"),
        (hist.axis.Regular(10, 1, 1000, transform=hist.axis.transform.log), "Events / bin"),
        (hist.axis.Integer(0, 10, label="number of jets"), "Events"),
    ],
)
def test_y_label_comes_from_the_bin_width(axis: Any, expected: str):
    assert y_label(axis) == expected


def test_the_drawn_y_label_is_the_bin_width(tmp_path: Path):
    mll = hist.Hist(hist.axis.Variable([60, 80, 88, 94, 100, 120], name="mll", label="m [GeV]"))
    mll.fill([91.0, 91.5, 70.0])
    _, texts = plot_svg({"MET": met_hist(), "mll": mll}, tmp_path / "p.svg")
    assert "Events / 2 GeV" in texts and "Events / bin" in texts
    assert "Events" not in texts  # no bare "Events" left over


# ------------------------------------------------------------- label, lumi, legend, titles


def test_experiment_label_lumi_and_completeness_in_the_file(tmp_path: Path):
    completeness = {"DYJets": 5 / 6, "TTbar": 1.0}
    result, texts = plot_svg(
        {"MET": met_hist()}, tmp_path / "p.svg", completeness=completeness, lumi=59.8, com=13
    )
    assert result.drawn == ["MET"] and result.note() is None
    assert "CMS" in texts and "Private Work" in texts
    # mathtext: the superscript "-1" of fb^-1 comes last in the SVG's text element
    assert any(t.startswith("59.8 fb") and "(13 TeV)" in t and "−1" in t for t in texts), texts
    # An incomplete dataset says so; a complete one is shown by name.
    assert "DYJets (83% of files)" in texts and "TTbar" in texts
    assert not any("TTbar (" in t for t in texts)


def test_lumi_below_one_inverse_femtobarn_is_shown_in_inverse_picobarn(tmp_path: Path):
    _, texts = plot_svg({"MET": met_hist()}, tmp_path / "p.svg", lumi=0.05)
    assert any(t.startswith("50 pb") for t in texts), texts


def test_another_experiment_and_label_text(tmp_path: Path):
    _, texts = plot_svg(
        {"MET": met_hist()}, tmp_path / "p.svg", experiment="atlas", text="Simulation Internal"
    )
    assert "ATLAS" in texts and "Simulation Internal" in texts and "CMS" not in texts


@pytest.mark.parametrize(
    ("fraction", "text"), [(0.999, "(>99% of files)"), (0.004, "(<1% of files)")]
)
def test_completeness_is_never_rounded_to_complete_or_empty(
    tmp_path: Path, fraction: float, text: str
):
    _, texts = plot_svg({"MET": met_hist()}, tmp_path / "p.svg", completeness={"TTbar": fraction})
    assert f"TTbar {text}" in texts


def test_one_title_at_most(tmp_path: Path):
    h = met_hist()
    drawable = [("MET", h), ("other/MET", h)]
    with plot._figure(drawable, **figure_options(title="MET per dataset")) as fig:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == 2
        assert [ax.get_title(loc) for ax in axes for loc in ("left", "center", "right")] == [""] * 6
        assert fig.get_suptitle() == "MET per dataset"
        # With several panels the histogram's name heads its legend instead.
        assert [ax.get_legend().get_title().get_text() for ax in axes] == ["MET", "other/MET"]
    with plot._figure(drawable[:1], **figure_options()) as fig:
        assert fig.get_suptitle() == ""
        assert all(ax.get_title() == "" for ax in fig.axes)


# ---------------------------------------------------------------------------------- overflow


def test_overflow_is_drawn_as_an_extra_bin():
    h = met_hist()
    overflow = float(h[{"dataset": "TTbar"}].values(flow=True)[-1])
    assert overflow > 100  # the sample has a tail beyond the axis
    with plot._figure([("MET", h)], **figure_options()) as fig:
        (ax,) = fig.axes
        steps = plot._steps(ax)
        assert len(steps) == 2
        ttbar = steps[1].get_data()
        assert len(ttbar.values) == 51 and ttbar.edges[-1] > 100
        assert ttbar.values[-1] == overflow
        assert ax.get_xlim()[1] > 100
        fig.canvas.draw()
        assert ">100" in [t.get_text() for t in ax.get_xticklabels()]


def test_an_axis_without_flow_bins_ends_at_its_edge():
    h = hist.Hist(hist.axis.Regular(10, 0, 100, name="x", label="x [GeV]", flow=False))
    h.fill([5.0, 50.0, 150.0])
    with plot._figure([("x", h)], **figure_options()) as fig:
        (step,) = plot._steps(fig.axes[0])
        assert len(step.get_data().values) == 10 and step.get_data().edges[-1] == 100


# ------------------------------------------------------------------------------ not 1D


def test_histograms_that_are_not_1d_are_named(tmp_path: Path):
    jets = hist.Hist(hist.axis.Regular(10, -2.5, 2.5, name="eta"), hist.axis.Regular(8, -3, 3))
    counts = hist.Hist(hist.axis.StrCategory(["a", "b"], name="dataset"))
    output = {"MET": met_hist(), "jets": {"eta_phi": jets}, "counts": counts, "n": 3}
    result = plot_histograms(output, tmp_path / "p.png")
    assert result.drawn == ["MET"]
    assert result.not_drawn == {"counts": "0D", "jets/eta_phi": "2D"}
    assert result.note() == "not drawn (not 1D): counts (0D), jets/eta_phi (2D)"

    only_2d = plot_histograms({"jet_eta_phi": jets}, tmp_path / "none.png")
    assert only_2d.path is None and only_2d.drawn == []
    assert only_2d.note() == "not drawn (not 1D): jet_eta_phi (2D)"
    assert not (tmp_path / "none.png").exists()


# ---------------------------------------------------------------------------- global state


def test_no_global_matplotlib_state_changes(tmp_path: Path):
    # In a fresh interpreter with another backend chosen, as a user's script or notebook would.
    script = textwrap.dedent(
        f"""
        import matplotlib
        matplotlib.use("pdf")
        import hist
        import matplotlib.pyplot as plt
        from chunkwise.plot import plot_histograms

        h = hist.Hist(hist.axis.Regular(50, 0, 100, name="MET", label="MET [GeV]"))
        h.fill([1.0, 50.0, 150.0])
        before = dict(matplotlib.rcParams)
        backend = matplotlib.get_backend()
        plot_histograms({{"MET": h}}, {str(tmp_path / "p.png")!r}, lumi=1.0)
        after = dict(matplotlib.rcParams)
        changed = sorted(k for k in before if before[k] != after[k])
        print("changed:", changed)
        print("backend:", backend, matplotlib.get_backend())
        print("figures:", plt.get_fignums())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "changed: []" in result.stdout, result.stdout
    assert "backend: pdf pdf" in result.stdout, result.stdout
    assert "figures: []" in result.stdout, result.stdout
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------- the demo's samples


def test_demo_samples_have_runs_trees_and_recognizable_physics(tmp_path: Path):
    from chunkwise.examples import DEMO_DATASETS, make_demo_fileset

    fileset = make_demo_fileset(tmp_path)
    met: dict[str, list[float]] = {}
    for dataset, (n_files, n_events) in DEMO_DATASETS.items():
        good = [p for p in fileset[dataset]["files"] if Path(p).exists()][:n_files]
        values = []
        for path in good:
            with uproot.open(path) as f:
                runs = f["Runs"].arrays(library="np")
                weights = f["Events"]["genWeight"].array(library="np")
                values.append(f["Events"]["MET_pt"].array(library="np"))
            assert len(runs["genEventCount"]) == 1  # one entry, as NanoAOD
            assert runs["genEventCount"].dtype == np.int64
            assert runs["genEventSumw"].dtype == runs["genEventSumw2"].dtype == np.float64
            assert runs["genEventCount"][0] == len(weights) == n_events
            assert runs["genEventSumw"][0] == pytest.approx(weights.astype(np.float64).sum())
            assert runs["genEventSumw2"][0] == pytest.approx(
                (weights.astype(np.float64) ** 2).sum()
            )
            assert 0 < (weights < 0).sum() < len(weights) / 4  # a few negative NLO weights
            assert np.all(np.abs(np.abs(weights) - 1) < 0.25)
        met[dataset] = np.concatenate(values)
    dy, tt = met["DYJets"], met["TTbar"]
    # Drell-Yan has no neutrinos: MET from resolution only, a few tens of GeV at most.
    assert 8 < np.median(dy) < 20 and np.mean(dy > 60) < 0.01
    # ttbar has neutrinos: a broad MET with a long tail beyond 100 GeV.
    assert np.median(tt) > 2 * np.median(dy) and 0.05 < np.mean(tt > 100) < 0.3
    # Same arguments, same data.
    again = make_demo_fileset(tmp_path / "again")
    first = next(iter(fileset["TTbar"]["files"]))
    second = next(iter(again["TTbar"]["files"]))
    with uproot.open(first) as a, uproot.open(second) as b:
        assert np.array_equal(a["Events"]["MET_pt"].array(), b["Events"]["MET_pt"].array())


def test_demo_dy_muons_come_from_a_z(tmp_path: Path):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from chunkwise.examples import write_nanoaod_like

    path = write_nanoaod_like(tmp_path / "dy.root", 2000, seed=3, process="dy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = NanoEventsFactory.from_root(
            {str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager"
        ).events()
    import awkward as ak

    pairs = events.Muon[ak.num(events.Muon) >= 2]
    a, b = pairs[:, 0], pairs[:, 1]
    mass = np.sqrt(2 * a.pt * b.pt * (np.cosh(a.eta - b.eta) - np.cos(a.phi - b.phi)))
    assert len(mass) > 1000
    assert abs(np.median(mass) - 91.2) < 1.5 and np.mean(abs(mass - 91.2) < 10) > 0.8
    assert ak.all(a.charge == -b.charge) and ak.all(a.pt >= b.pt)
    with pytest.raises(ValueError, match="process must be one of"):
        write_nanoaod_like(tmp_path / "x.root", 10, seed=1, process="higgs")


def test_the_demo_run_plotted_with_its_completeness(tmp_path: Path):
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    import chunkwise
    from chunkwise.examples import METProcessor, make_demo_fileset

    fileset = make_demo_fileset(tmp_path / "files")
    runner = processor.Runner(
        executor=processor.IterativeExecutor(status=False),
        schema=NanoAODSchema,
        skipbadfiles=True,
    )
    report = chunkwise.run(fileset, METProcessor(), runner, files_per_chunk=5, progress=False)
    assert report.completeness == {"DYJets": 5 / 6, "TTbar": 4 / 5}
    result, texts = plot_svg(
        report.output,
        tmp_path / "met.svg",
        completeness=report.completeness,
        text="Simulation Private Work",
    )
    assert result.drawn == ["MET"]
    assert "DYJets (83% of files)" in texts and "TTbar (80% of files)" in texts
    assert "Events / 2 GeV" in texts and ">100" in texts and "Simulation Private Work" in texts


# --------------------------------------------------------------------------------- the CLI


def cli(*args: Any, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_cli_refuses_a_bad_plot_before_running(tmp_path: Path):
    from chunkwise.examples import write_nanoaod_like

    path = write_nanoaod_like(tmp_path / "a.root", 10, seed=1)
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps({"DY": {"files": {str(path): "Events"}}}))
    run = ("run", source, "--processor", "chunkwise.examples:METProcessor")
    out = tmp_path / "out"
    out.mkdir()
    assert_usage_error(cli(*run, "--plot", out / "met.jpg"), "'", ".png, .pdf or .svg")
    assert_usage_error(cli(*run, "--plot", out / "met.png", "--lumi", "-3"), "positive number")
    assert_usage_error(cli(*run, "--plot", out / "met.png", "--experiment", "Belle"), "choice")
    assert_usage_error(cli(*run, "--lumi", "59.8"), "--plot")
    assert list(out.iterdir()) == []


def test_cli_plots_pdf_with_lumi_and_names_the_2d_histograms(tmp_path: Path):
    from chunkwise.examples import make_demo_fileset

    fileset = make_demo_fileset(tmp_path / "files")
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(fileset))
    (tmp_path / "two_d.py").write_text(
        textwrap.dedent(
            """
            import hist
            from chunkwise.examples import METProcessor

            class WithMaps(METProcessor):
                def process(self, events):
                    out = super().process(events)
                    out["jet_eta_phi"] = hist.Hist(
                        hist.axis.Regular(5, -2.5, 2.5, name="eta"),
                        hist.axis.Regular(5, -3.2, 3.2, name="phi"),
                    )
                    return out
            """
        )
    )
    pdf = tmp_path / "met.pdf"
    result = cli(
        "run", source, "--processor", "two_d:WithMaps", "--files-per-chunk", "5",
        "--plot", pdf, "--lumi", "59.8", "--com", "13", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # incomplete: one missing, one truncated file
    assert pdf.read_bytes()[:5] == b"%PDF-"
    lines = result.stderr.splitlines()
    assert f"plotted MET to {pdf}" in lines
    assert "not drawn (not 1D): jet_eta_phi (2D)" in lines

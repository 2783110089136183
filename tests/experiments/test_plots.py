"""Figures from results.jsonl files written as DomainBed's train.py writes them: which
files are written, and that bars and curves show the selected runs' numbers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from conftest import run_module
from domainbed_dge.experiments import figures as drawing
from domainbed_dge.experiments.records import load_runs
from domainbed_dge.experiments.selection import SOURCE_VALIDATION, select
from domainbed_dge.experiments.dataset_results import DatasetResults
from test_collect_results import write_run

pytest.importorskip("matplotlib")

DIAGNOSTIC_VALUES = {
    "dge_net_vs_gradavg": 0.2, "pair_conflict_fraction": 0.5, "coordinate_conflict_fraction": 0.3,
    "grad_cosine": 0.9, "direction_norm_ratio": 1.1, "dge_adjusted_pairs": 2.0,
}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """ToyShift (3 environments): ERM and DGE from sources 0 and 1; DGE has two trials,
    whose weights w_k at steps 0, 1, 2 are (1, 1, 1), (0.8, 0.9, 1.0) and (0.6, 0.8, 1.0)
    in trial 0 and (1, 1, 1), (0.6, 0.7, 1.0), (0.4, 0.6, 1.0) in trial 1; trial 1 logs
    no step 2. OtherShift: ERM from source 0 only, without diagnostics."""
    sweep = tmp_path / "sweep"
    checkpoints = [([.9, .5, .3], [.6, .5, .5]), ([.9, .6, .4], [.7, .5, .5]), ([.9, .7, .5], [.8, .5, .5])]
    weights = {0: [(1, 1, 1), (.8, .9, 1.), (.6, .8, 1.)], 1: [(1, 1, 1), (.6, .7, 1.), (.4, .6, 1.)]}
    for source in (0, 1):
        write_run(sweep, f"erm_{source}", checkpoints, source=source, trial_seed=0, hparams_seed=0, algorithm="ERM")
        for trial, trial_weights in weights.items():
            steps = 3 if trial == 0 else 2
            step_extras = [{**DIAGNOSTIC_VALUES, **{f"dge_weight_{k}": w for k, w in enumerate(ws)}}
                           for ws in trial_weights[:steps]]
            write_run(sweep, f"dge_{source}_{trial}", checkpoints[:steps], source=source, trial_seed=trial,
                      hparams_seed=0, algorithm="DGE", step_extras=step_extras)
    write_run(sweep, "other", checkpoints, source=0, trial_seed=0, hparams_seed=0, algorithm="ERM",
              dataset="OtherShift")
    return sweep


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])


def dataset_results(sweep: Path, dataset: str) -> DatasetResults:
    loaded = load_runs(str(sweep))
    return next(r for r in DatasetResults.build(loaded.runs, select(loaded.runs, SOURCE_VALIDATION))
                if r.dataset == dataset)


def test_writes_one_figure_set_per_dataset_and_source(sweep, tmp_path):
    figures = tmp_path / "figures"
    result = run_module("domainbed_dge.plots", "--input_dir", str(sweep), "--output_dir", str(figures), cwd=tmp_path)
    expected = {
        "ToyShift_accuracy.png",
        "ToyShift_source-env0_curves.png", "ToyShift_source-env0_diagnostics.png",
        "ToyShift_source-env1_curves.png", "ToyShift_source-env1_diagnostics.png",
        "ToyShift_paired.png", "OtherShift_accuracy.png", "OtherShift_source-env0_curves.png",
    }
    assert {path.name for path in figures.iterdir()} == expected
    assert sorted(line.split()[-1] for line in result.stdout.splitlines()) == sorted(str(figures / n) for n in expected)
    assert png_size(figures / "ToyShift_source-env0_diagnostics.png") == (int(4.4 * 4 * drawing.DPI), 7 * drawing.DPI)
    assert png_size(figures / "ToyShift_source-env0_curves.png") == (13 * drawing.DPI, int(3.8 * drawing.DPI))


def test_bars_are_the_selected_target_accuracies(sweep):
    results = dataset_results(sweep, "ToyShift")
    axes = drawing.accuracy_bars(results).axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["env0", "env1", "Avg"]  # no run has source 2
    heights = {container.get_label(): [patch.get_height() for patch in container.patches]
               for container in axes.containers if hasattr(container, "patches")}
    # Source 0: the checkpoint with the best source out accuracy is the last one logged:
    # targets 0.7, 0.5 (step 2) or 0.6, 0.4 (DGE's trial 1, step 1). Source 1: its out
    # accuracy ties at 0.5, so step 0: targets 0.9, 0.3. Avg: the mean over the sources.
    assert heights["ERM"] == pytest.approx([60.0, 60.0, 60.0])
    assert heights["DGE"] == pytest.approx([55.0, 60.0, 57.5])


def test_curves_average_the_trials_over_their_common_steps(sweep):
    runs = [selection.run for selection in dataset_results(sweep, "ToyShift").trials("DGE", 0)]
    steps, values = drawing.mean_curve(runs, lambda run, record: record.get("dge_weight_1"))
    assert steps == [0, 1] and values == pytest.approx([1.0, 0.8])
    assert drawing.mean_curve(runs, lambda run, record: None) == ([], [])


def test_diagnostics_show_each_weight_and_each_logged_diagnostic(sweep):
    results = dataset_results(sweep, "ToyShift")
    figure = drawing.diagnostics(results, 0)
    weights_axes, *panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [line.get_label() for line in weights_axes.lines] == ["DGE w0", "DGE w1", "DGE w2"]
    assert list(weights_axes.lines[0].get_ydata()) == pytest.approx([1.0, 0.7])
    assert [axes.get_title() for axes in panels] == list(drawing.DIAGNOSTICS)
    for axes, key in zip(panels, drawing.DIAGNOSTICS):
        (line,) = axes.lines  # ERM logs no diagnostics
        assert line.get_label() == "DGE" and list(line.get_ydata()) == pytest.approx([DIAGNOSTIC_VALUES[key]] * 2)
    assert drawing.diagnostics(dataset_results(sweep, "OtherShift"), 0) is None


def test_each_weight_has_its_own_colour_and_each_method_its_own_line_style(sweep, tmp_path):
    (weights_axes, *_) = drawing.diagnostics(dataset_results(sweep, "ToyShift"), 0).axes
    assert len({line.get_color() for line in weights_axes.lines}) == 3
    assert {line.get_linestyle() for line in weights_axes.lines} == {"-"}
    for trial in (0, 1):  # a second method with weights: the same three colours, dashed
        write_run(sweep, f"pcgrad_{trial}", [([.9, .5, .3], [.6, .5, .5])], source=0, trial_seed=trial,
                  hparams_seed=0, algorithm="PCGrad", step_extras=[{f"dge_weight_{k}": .5 for k in range(3)}])
    (weights_axes, *_) = drawing.diagnostics(dataset_results(sweep, "ToyShift"), 0).axes
    styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in weights_axes.lines}
    for k in range(3):
        assert styles[f"DGE w{k}"][0] == styles[f"PCGrad w{k}"][0]
        assert (styles[f"DGE w{k}"][1], styles[f"PCGrad w{k}"][1]) == ("-", "--")


def test_titles_say_how_many_trials_they_average(sweep):
    toy, other = dataset_results(sweep, "ToyShift"), dataset_results(sweep, "OtherShift")
    assert drawing.accuracy_bars(toy).axes[0].get_title().endswith("(source validation selection, mean and std over "
                                                                   "1-2 trials)")
    assert drawing.training_curves(toy, 0).get_suptitle().endswith("training curves (mean over 1-2 trials)")
    assert drawing.diagnostics(toy, 0).get_suptitle().endswith("diagnostics (mean over 1-2 trials)")
    assert drawing.accuracy_bars(other).axes[0].get_title().endswith("(source validation selection, one trial)")
    assert drawing.training_curves(other, 0).get_suptitle().endswith("training curves (one trial)")
    assert drawing.over_trials([3, 3, 0]) == "mean over 3 trials"


def test_one_source_gets_one_bar_per_method_and_the_legend_stays_off_the_axes(sweep):
    figure = drawing.accuracy_bars(dataset_results(sweep, "OtherShift"))
    (axes,) = figure.axes
    assert [label.get_text() for label in axes.get_xticklabels()] == ["env0"]
    (bars,) = [container for container in axes.containers if hasattr(container, "patches")]
    assert len(bars.patches) == 1
    assert [segment.tolist() for segment in bars.errorbar.lines[2][0].get_segments()] == [[]]  # no std of one trial
    figure.canvas.draw()
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["ERM"]
    assert not legend.get_window_extent().overlaps(axes.get_window_extent())


def test_finished_only_draws_no_figure_for_a_job_without_done(sweep, tmp_path):
    (sweep / "other" / "done").unlink()  # OtherShift's only job is still running
    figures = tmp_path / "figures"
    run_module("domainbed_dge.plots", "--input_dir", str(sweep), "--output_dir", str(figures), "--finished_only",
               cwd=tmp_path)
    names = {path.name for path in figures.iterdir()}
    assert "ToyShift_accuracy.png" in names
    assert not any(name.startswith("OtherShift") for name in names)


def test_the_forest_plot_shows_each_rows_paired_interval_against_each_reference(sweep):
    # ToyShift's ERM against DGE on the pairs both ran (trial 0 of sources 0 and 1): its
    # interval as a bar, its mean as a dot, on the row of its rank.
    results = dataset_results(sweep, "ToyShift")
    (paired,) = [p for p in drawing.paired_differences(results, "DGE") if p.method == "ERM"]
    figure = drawing.paired_forest(results, references=("Baseline", "DGE"))
    (axes,) = figure.axes  # no Baseline in this sweep: one panel
    assert axes.get_title() == f"vs DGE ({len(paired.differences)} pairs)"
    interval, dot = axes.lines[:2]
    assert list(interval.get_xdata()) == pytest.approx(list(paired.interval))
    assert list(dot.get_xdata()) == pytest.approx([paired.mean])
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert [label.split(" (")[0] for label in labels] == ["ERM", "DGE"]  # ranked by mean target accuracy
    assert drawing.paired_forest(dataset_results(sweep, "OtherShift")) is None
    assert drawing.paired_forest(results, references=("Baseline",)) is None


def test_a_row_with_one_pair_is_an_open_grey_dot(sweep):
    # OtherShift: DGE beside ERM in trial 0 of source 0 only, one pair, 0.1 points above.
    write_run(sweep, "other_dge", [([.9, .5, .3], [.7, .5, .5])], source=0, trial_seed=0, hparams_seed=0,
              algorithm="DGE", dataset="OtherShift")
    (axes,) = drawing.paired_forest(dataset_results(sweep, "OtherShift"), references=("DGE",)).axes
    (dot,) = axes.lines[:-1]  # the last line is the dashed 0
    assert dot.get_color() == drawing.ACROSS and dot.get_markerfacecolor() == "white"
    assert len(dot.get_xdata()) == 1

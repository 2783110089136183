"""SDG tables from results.jsonl files written as DomainBed's train.py writes them:
selection, statistics and layout pinned on hand-computed numbers, bad lines skipped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_module
from domainbed_dge import collect_results
from domainbed_dge.experiments import tables
from domainbed_dge.experiments.records import load_runs
from domainbed_dge.experiments.selection import ORACLE, SOURCE_VALIDATION, select

DATASET = "ToyShift"  # unknown to DomainBed: environments are named env0, env1, env2
#: How the over-training tables of logged values say what a cell is.
OVER_TRAINING = ("by checkpoint step: mean over the runs of every source and trial, each value the mean over the "
                 "steps since the previous checkpoint")


def train_record(*, algorithm, test_envs, trial_seed, hparams_seed, step, in_acc, out_acc, output_dir,
                 dataset=DATASET, hparams=None, extra=None) -> dict:
    """One line of results.jsonl, with the keys train.py writes (``vars(args)`` included)."""
    record = {
        "step": step, "epoch": step / 10, "loss": 1.0 / (step + 1), "step_time": 0.1, "mem_gb": 0.0,
        "hparams": {"batch_size": 8, "lr": 1e-3, **(hparams or {})},
        "args": {
            "algorithm": algorithm, "checkpoint_freq": 1, "data_dir": "data", "dataset": dataset,
            "holdout_fraction": 0.2, "hparams": json.dumps(hparams) if hparams else None,
            "hparams_seed": hparams_seed, "output_dir": output_dir, "save_model_every_checkpoint": False,
            "seed": 0, "skip_model_save": False, "steps": 2, "task": "domain_generalization",
            "test_envs": test_envs, "trial_seed": trial_seed, "uda_holdout_fraction": 0,
        },
        **(extra or {}),
    }
    for env, (in_value, out_value) in enumerate(zip(in_acc, out_acc)):
        record[f"env{env}_in_acc"] = in_value
        record[f"env{env}_out_acc"] = out_value
    return record


def write_run(sweep_dir: Path, name: str, checkpoints: list[tuple[list, list]], *, source: int,
              num_environments: int = 3, trailing: str = "", extra: dict | None = None,
              step_extras: list[dict] | None = None, **fields) -> Path:
    """A job directory whose results.jsonl has one record per (in_acc, out_acc) checkpoint,
    at steps 0, 1, ...; ``extra`` goes into every record, ``step_extras[i]`` into the i-th."""
    job_dir = sweep_dir / name
    job_dir.mkdir(parents=True)
    test_envs = [env for env in range(num_environments) if env != source]
    step_extras = step_extras or [{}] * len(checkpoints)
    lines = [json.dumps(train_record(test_envs=test_envs, step=step, in_acc=in_acc, out_acc=out_acc,
                                     output_dir=str(job_dir), extra={**(extra or {}), **step_extras[step]},
                                     **fields), sort_keys=True)
             for step, (in_acc, out_acc) in enumerate(checkpoints)]
    (job_dir / "results.jsonl").write_text("\n".join(lines) + "\n" + trailing)
    (job_dir / "done").write_text("done")
    return job_dir / "results.jsonl"


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Hand-computed cells (accuracy on the targets' in splits, averaged over targets):

    ERM, source 0. Trial 0: hparams 0 scores 0.50 then 0.70 on the source's out split,
    hparams 1 scores 0.90 then 0.60; source validation takes hparams 1 at step 0
    (targets 0.05, 0.15: 0.10); the oracle takes the last checkpoint whose targets' out
    mean is highest: hparams 1 (0.40 > 0.10), targets 0.70, 0.90: 0.80. Trial 1: one
    run; source validation step 0 (0.80 > 0.40): 0.20, 0.40 -> 0.30; oracle step 1: 0.50.
    ERM, source 1, trial 0: 0.60, 0.80 -> 0.70. DGE: 0.40, 0.50, 0.60 for sources 0-2.
    DGE labelled "DGE (adjust off)": 0.33 for source 0.
    """
    sweep = tmp_path / "sweep"
    erm = dict(algorithm="ERM")
    write_run(sweep, "erm_s0_t0_h0", [([.9, .20, .40], [.50, .9, .9]), ([.9, .40, .60], [.70, .1, .1])],
              source=0, trial_seed=0, hparams_seed=0, **erm)
    write_run(sweep, "erm_s0_t0_h1", [([.9, .05, .15], [.90, .2, .2]), ([.9, .70, .90], [.60, .3, .5])],
              source=0, trial_seed=0, hparams_seed=1, **erm)
    write_run(sweep, "erm_s0_t1_h0", [([.9, .20, .40], [.80, .5, .5]), ([.9, .50, .50], [.40, .6, .6])],
              source=0, trial_seed=1, hparams_seed=0, **erm,
              trailing='{"args": {"dataset": "ToyShift", "algor')  # a job killed mid-write
    write_run(sweep, "erm_s1_t0_h0", [([.60, .9, .80], [.5, .5, .5])], source=1, trial_seed=0, hparams_seed=0, **erm)
    for source, accuracy in enumerate([.40, .50, .60]):
        in_acc = [accuracy] * 3
        in_acc[source] = 1.0
        write_run(sweep, f"dge_s{source}", [(in_acc, [.5] * 3)], source=source, trial_seed=0, hparams_seed=0,
                  algorithm="DGE", extra={"dge_weight_0": 1.0, "pair_conflict_fraction": 0.5})
    write_run(sweep, "dge_adjust_off", [([1.0, .33, .33], [.5] * 3)], source=0, trial_seed=0, hparams_seed=0,
              algorithm="DGE", hparams={"sweep_variant": "DGE (adjust off)", "dge_adjust": False},
              trailing="[1, 2]\n" + json.dumps({"step": 3}) + "\n")
    mdg = sweep / "mdg"
    mdg.mkdir()
    (mdg / "results.jsonl").write_text(json.dumps(train_record(
        algorithm="ERM", test_envs=[1], trial_seed=0, hparams_seed=0, step=0, in_acc=[.5] * 3, out_acc=[.5] * 3,
        output_dir=str(mdg))) + "\n")
    return sweep


def text_table(output: str, title: str) -> list[list[str]]:
    """The rows (header first) of the text table titled ``title``."""
    block = output.split(f"-------- {title}\n", 1)[1].split("\n\n", 1)[0]
    return [re.split(r"\s{2,}", line.strip()) for line in block.strip().splitlines()]


def test_tables_pin_selection_statistics_and_skipped_lines(sweep):
    result = run_module("domainbed_dge.collect_results", "--input_dir", str(sweep), cwd=sweep)
    output = result.stdout
    assert "12 records in 9 results files, 8 SDG runs; 3 bad lines skipped; 1 records not SDG" in output
    assert text_table(output, f"{DATASET}, {SOURCE_VALIDATION} selection: accuracy by source domain") == [
        ["Algorithm", "env0", "env1", "env2", "Avg"],
        ["ERM", "20.0 +/- 10.0 (2)", "70.0 +/- 0.0 (1)", "X", "X"],
        ["DGE", "40.0 +/- 0.0 (1)", "50.0 +/- 0.0 (1)", "60.0 +/- 0.0 (1)", "50.0"],
        ["DGE (adjust off)", "33.0 +/- 0.0 (1)", "X", "X", "X"],
    ]
    assert text_table(output, f"{DATASET}, {ORACLE} selection: accuracy by source domain")[1] == [
        "ERM", "65.0 +/- 15.0 (2)", "70.0 +/- 0.0 (1)", "X", "X"]
    # Source 0's targets: trial 0 (hparams 1, step 0) 0.05 and 0.15, trial 1 (step 0) 0.20 and 0.40.
    assert text_table(output, f"{DATASET}, {SOURCE_VALIDATION} selection, ERM: source x target accuracy (%), "
                              "mean over trials") == [
        ["source \\ target", "env0", "env1", "env2"],
        ["env0", "-", "12.5", "27.5"],
        ["env1", "60.0", "-", "80.0"],
        ["env2", "X", "X", "-"],
    ]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4
    assert warnings.count("warning: environments of ToyShift are labelled env0 .. env2: DomainBed does not know "
                          "the dataset ToyShift") == 1  # said once, for both selections
    killed = sweep / "erm_s0_t1_h0" / "results.jsonl"
    assert any(f"{killed} line 3: skipped, Unterminated string" in line for line in warnings)
    adjust_off = sweep / "dge_adjust_off" / "results.jsonl"
    assert any(f"{adjust_off} line 2: skipped, not a JSON object but list" in line for line in warnings)
    assert any(f"{adjust_off} line 3: skipped, no 'args' object" in line for line in warnings)


def test_markdown_and_latex_layouts(sweep):
    loaded = load_runs(str(sweep), warn=lambda message: None)
    markdown = tables.report(str(sweep), loaded, "markdown")
    assert "| Algorithm | env0 | env1 | env2 | Avg |\n| --- | --- | --- | --- | --- |\n" in markdown
    assert "| ERM | 20.0 ± 10.0 (2) | 70.0 ± 0.0 (1) | X | X |" in markdown
    latex = tables.report(str(sweep), loaded, "latex")
    assert latex.startswith("\\documentclass{article}") and latex.rstrip().endswith("\\end{document}")
    assert "\\begin{tabular}{lcccc}" in latex
    assert "DGE (adjust off) & 33.0 $\\pm$ 0.0 (1) & X & X & X \\\\" in latex
    assert tables.latex_escape("a_b & 5% #1") == "a\\_b \\& 5\\% \\#1"


def test_ties_go_to_the_earlier_checkpoint_and_the_first_hparams_seed(tmp_path):
    write_run(tmp_path, "h1", [([.9, .1, .1], [.5, .0, .0])], source=0, trial_seed=0, hparams_seed=1, algorithm="ERM")
    write_run(tmp_path, "h0", [([.9, .2, .2], [.5, .0, .0]), ([.9, .3, .3], [.5, .0, .0])],
              source=0, trial_seed=0, hparams_seed=0, algorithm="ERM")
    (selection,) = select(load_runs(str(tmp_path)).runs, SOURCE_VALIDATION).values()
    assert (selection.run.hparams_seed, selection.record["step"], selection.accuracy) == (0, 0, pytest.approx(.2))


def test_no_sdg_records_is_an_error(tmp_path, capsys):
    (tmp_path / "mdg").mkdir()
    (tmp_path / "mdg" / "results.jsonl").write_text(json.dumps(train_record(
        algorithm="ERM", test_envs=[0], trial_seed=0, hparams_seed=0, step=0, in_acc=[.5] * 3, out_acc=[.5] * 3,
        output_dir="mdg")) + "\n")
    assert collect_results.main(["--input_dir", str(tmp_path)]) == 1
    assert f"No SDG records under {tmp_path}" in capsys.readouterr().err


@pytest.mark.domainbed
def test_columns_are_domainbed_environment_names(tmp_path):
    write_run(tmp_path, "pacs", [([1.0, .5, .5, .5], [.5] * 4)], source=0, num_environments=4, dataset="PACS",
              trial_seed=0, hparams_seed=0, algorithm="ERM")
    output = tables.report(str(tmp_path), load_runs(str(tmp_path)), "text")
    assert text_table(output, f"PACS, {SOURCE_VALIDATION} selection: accuracy by source domain") == [
        ["Algorithm", "A", "Avg"],
        ["ERM", "50.0 +/- 0.0 (1)", "50.0"],
    ]


def test_declared_targets_are_the_only_ones_averaged_and_columns_are_the_sources_run(tmp_path):
    # Four environments, sources 0 and 1, target 3 only (as a preset's "targets": [3]).
    for source in (0, 1):
        in_acc = [0.9, 0.9, 0.1, 0.1]
        in_acc[3] = 0.6 + 0.2 * source
        write_run(tmp_path, f"s{source}", [(in_acc, [.5] * 4)], source=source, num_environments=4, trial_seed=0,
                  hparams_seed=0, algorithm="DGE", hparams={"sweep_targets": [3]})
    output = tables.report(str(tmp_path), load_runs(str(tmp_path)), "text")
    assert text_table(output, f"{DATASET}, {SOURCE_VALIDATION} selection: accuracy by source domain") == [
        ["Algorithm", "env0", "env1", "Avg"],
        ["DGE", "60.0 +/- 0.0 (1)", "80.0 +/- 0.0 (1)", "70.0"],
    ]


def test_one_source_gets_each_target_s_accuracy_ranked_and_more_sources_do_not(tmp_path):
    # Source 0 only. DGE: trial 0 targets 0.40 / 0.80, trial 1 0.50 / 0.70 (means 45.0 / 75.0,
    # Avg 60.0). ERM: trial 0 only, 0.70 / 0.30 (Avg 50.0), ranked below DGE.
    for trial, targets in enumerate([(.40, .80), (.50, .70)]):
        write_run(tmp_path, f"dge{trial}", [([1.0, *targets], [.5] * 3)], source=0, trial_seed=trial,
                  hparams_seed=0, algorithm="DGE")
    write_run(tmp_path, "erm", [([1.0, .70, .30], [.5] * 3)], source=0, trial_seed=0, hparams_seed=0, algorithm="ERM")
    title = (f"{DATASET}, {SOURCE_VALIDATION} selection: accuracy (%) on each target domain, rows ranked by average "
             "target accuracy, mean over trials")
    output = tables.report(str(tmp_path), load_runs(str(tmp_path)), "text")
    assert text_table(output, title) == [
        ["Method", "env1", "env2", "Avg", "trials"],
        ["DGE", "45.0", "75.0", "60.0", "2"],
        ["ERM", "70.0", "30.0", "50.0", "1"],
    ]
    write_run(tmp_path, "dge_s1", [([.5, 1.0, .5], [.5] * 3)], source=1, trial_seed=0, hparams_seed=0, algorithm="DGE")
    assert "each target domain" not in tables.report(str(tmp_path), load_runs(str(tmp_path)), "text")


def test_a_target_that_was_trained_on_is_a_bad_record(tmp_path):
    write_run(tmp_path, "bad", [([1.0, .5, .5], [.5] * 3)], source=0, trial_seed=0, hparams_seed=0,
              algorithm="DGE", hparams={"sweep_targets": [0]})
    warnings = []
    assert load_runs(str(tmp_path), warn=warnings.append).runs == []
    assert "sweep_targets [0] is not a non-empty list of test environments" in warnings[0]


#: Target accuracy by (source, trial) of two rows, for the paired tables.
CONTROL_PAIRS = {(0, 0): .50, (0, 1): .52, (1, 0): .40, (1, 1): .44}
DGE_PAIRS = {(0, 0): .60, (0, 1): .50, (1, 0): .46, (1, 1): .46}


def write_pairs(sweep_dir: Path, accuracies: dict[str, dict[tuple[int, int], float]]) -> None:
    """One finished one-checkpoint DGE run per row label and (source, trial): every
    target at the given accuracy, the source at 1.0 (0.5 on every out split)."""
    for label, by_pair in accuracies.items():
        for (source, trial), accuracy in by_pair.items():
            in_acc = [accuracy] * 3
            in_acc[source] = 1.0
            write_run(sweep_dir, f"{label}_{source}_{trial}".replace(" ", ""), [(in_acc, [.5] * 3)], source=source,
                      trial_seed=trial, hparams_seed=0, algorithm="DGE",
                      hparams={"sweep_variant": label} if label != "DGE" else None)


def test_paired_differences_to_the_step_matched_control(tmp_path):
    # Sources 0 and 1, trials 0 and 1. DGE minus control: +0.10, -0.02, +0.06, +0.02
    # (mean +4.0 points, sample std 5.16, t(0.975, 3) = 3.182: half-width 8.22).
    write_pairs(tmp_path, {"GradAvg x K": CONTROL_PAIRS, "DGE": DGE_PAIRS})
    output = tables.report(str(tmp_path), load_runs(str(tmp_path)), "text")
    title = f"{DATASET}, {SOURCE_VALIDATION} selection: paired difference to GradAvg x K over (source, trial) pairs"
    rows = text_table(output, title + ", target accuracy in points")
    assert rows == [["Method", "pairs", "mean diff (points)", "95% interval", "wins", "losses"],
                    ["DGE", "4", "+4.0", "[-4.2, +12.2]", "3", "1"]]


def test_the_overview_ranks_the_rows_beside_their_paired_difference_to_each_reference(tmp_path, capsys):
    # GradAvg x K: 51.0 from source 0, 42.0 from source 1; DGE: 55.0, 46.0 (the pairs of the
    # test above); Baseline ran source 0, trial 0 only (45.0): no Avg, unranked, last.
    write_pairs(tmp_path, {"GradAvg x K": CONTROL_PAIRS, "DGE": DGE_PAIRS, "Baseline": {(0, 0): .45}})
    assert collect_results.main(["--input_dir", str(tmp_path), "--reference", "GradAvg x K", "DGE"]) == 0
    output = capsys.readouterr().out
    title = (f"{DATASET}, {SOURCE_VALIDATION} selection: overview, rows ranked by average target accuracy: accuracy "
             "(%) by source domain (mean over trials), the selected checkpoints' source validation accuracy (%, Avg), "
             "paired difference to each reference (points, 95% interval)")
    assert text_table(output, title) == [
        ["Rank", "Method", "env0", "env1", "Avg", "source validation Avg", "vs GradAvg x K", "vs DGE"],
        ["1", "DGE", "55.0", "46.0", "50.5", "50.0", "+4.0 [-4.2, +12.2]", "-"],
        ["2", "GradAvg x K", "51.0", "42.0", "46.5", "50.0", "-", "-4.0 [-12.2, +4.2]"],
        ["X", "Baseline", "45.0", "X", "X", "X", "-5.0 X", "-15.0 X"],
    ]
    oracle = (f"{DATASET}, {ORACLE} selection: overview, rows ranked by average target accuracy: accuracy (%) by "
              "source domain (mean over trials), paired difference to each reference (points, 95% interval)")
    assert text_table(output, oracle)[0] == ["Rank", "Method", "env0", "env1", "Avg", "vs GradAvg x K", "vs DGE"]
    for reference in ("GradAvg x K", "DGE"):
        assert f"paired difference to {reference} over (source, trial) pairs" in output
    assert collect_results.main(["--input_dir", str(tmp_path), "--reference", "DGE"]) == 0
    assert title not in capsys.readouterr().out  # one reference: its paired table only


def test_a_reference_that_is_no_row_is_refused_listing_the_rows(tmp_path, capsys):
    for label in ("GradAvg x K", "DGE"):
        write_run(tmp_path, label.replace(" ", ""), [([.5] * 3, [.5] * 3)], source=0, trial_seed=0, hparams_seed=0,
                  algorithm="DGE", hparams={"sweep_variant": label} if label != "DGE" else None)
    with pytest.raises(SystemExit):
        collect_results.main(["--input_dir", str(tmp_path), "--reference", "Baseline"])
    assert "--reference 'Baseline' is not a row of these results; allowed: DGE, GradAvg x K" in capsys.readouterr().err
    assert collect_results.main(["--input_dir", str(tmp_path), "--reference", "DGE"]) == 0
    assert "paired difference to DGE" in capsys.readouterr().out


def test_rows_keeps_only_the_named_rows_and_refuses_an_unknown_one(tmp_path, capsys):
    for label in ("GradAvg x K", "DGE", "Baseline"):
        write_run(tmp_path, label.replace(" ", ""), [([.5] * 3, [.5] * 3)], source=0, trial_seed=0, hparams_seed=0,
                  algorithm="DGE", hparams={"sweep_variant": label} if label != "DGE" else None)
    assert collect_results.main(["--input_dir", str(tmp_path), "--rows", "DGE", "GradAvg x K"]) == 0
    output = capsys.readouterr().out
    rows = text_table(output, f"{DATASET}, {SOURCE_VALIDATION} selection: accuracy by source domain")
    assert [row[0] for row in rows[1:]] == ["DGE", "GradAvg x K"]
    with pytest.raises(SystemExit):
        collect_results.main(["--input_dir", str(tmp_path), "--rows", "DGE", "PCGrad"])
    assert "--rows 'PCGrad' is not a row of these results; allowed: Baseline, DGE, GradAvg x K" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        collect_results.main(["--input_dir", str(tmp_path), "--rows", "DGE", "--reference", "Baseline"])
    assert "--reference 'Baseline' is not a row of these results; allowed: DGE" in capsys.readouterr().err


def test_selection_scores_and_max_step(sweep):
    # ERM, source 0: trial 0 selects hparams 1 at step 0 (0.90), trial 1 step 0 (0.80).
    output = tables.report(str(sweep), load_runs(str(sweep)), "text")
    rows = text_table(output, f"{DATASET}, {SOURCE_VALIDATION} selection: the selected checkpoints' source "
                              "validation accuracy (%)")
    assert rows[0] == ["Algorithm", "env0", "env1", "env2", "Avg"]
    assert rows[1][:2] == ["ERM", "85.0 +/- 5.0 (2)"]
    # Stopped at step 0, the oracle sees one checkpoint per run: hparams 0's targets' out
    # mean is 0.9 against hparams 1's 0.2, so it takes hparams 0: targets 0.20, 0.40.
    early = load_runs(str(sweep), max_step=0)
    assert all(record["step"] == 0 for run in early.runs for record in run.records)
    assert select(early.runs, ORACLE)[(DATASET, "ERM", 0, 0)].accuracy == pytest.approx(0.30)


def test_finished_only_leaves_out_jobs_without_done(sweep):
    (sweep / "dge_s2" / "done").unlink()  # a job still running; the MDG job has no done either
    every = run_module("domainbed_dge.collect_results", "--input_dir", str(sweep), cwd=sweep).stdout
    finished = run_module("domainbed_dge.collect_results", "--input_dir", str(sweep), "--finished_only", cwd=sweep).stdout
    assert ("2 of the results files are unfinished (no `done`: running or stopped jobs), and their checkpoints "
            "so far are counted; --finished_only leaves them out.") in every
    assert "2 unfinished results files (no `done`) left out (--finished_only)." in finished
    title = f"{DATASET}, {SOURCE_VALIDATION} selection: accuracy by source domain"
    assert text_table(every, title)[0] == ["Algorithm", "env0", "env1", "env2", "Avg"]
    assert ["DGE", "40.0 +/- 0.0 (1)", "50.0 +/- 0.0 (1)", "60.0 +/- 0.0 (1)", "50.0"] in text_table(every, title)
    # Only DGE ran from source 2, so its column goes with the unfinished job.
    assert text_table(finished, title)[0] == ["Algorithm", "env0", "env1", "Avg"]
    assert ["DGE", "40.0 +/- 0.0 (1)", "50.0 +/- 0.0 (1)", "45.0"] in text_table(finished, title)


def test_equilibrium_over_training_averages_the_runs_at_each_common_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    checkpoints = [([1.0, .5, .5], [.5] * 3)] * 3
    # Source 0: weights (1, 1, 1), (.4, .6, .8), (.1, .2, .3); source 1 logs steps 0 and 1 only:
    # (1, 1, 1), (.2, .4, .6). Step 2 is not common to both runs, so it has no column.
    for source, weights, nets in [(0, [(1, 1, 1), (.4, .6, .8), (.1, .2, .3)], [0.0, 0.5, 0.1]),
                                  (1, [(1, 1, 1), (.2, .4, .6)], [0.0, 0.3])]:
        step_extras = [{"dge_net_vs_gradavg": net, **{f"dge_weight_{k}": w for k, w in enumerate(ws)}}
                       for ws, net in zip(weights, nets)]
        write_run(sweep, f"dge_{source}", checkpoints[:len(weights)], source=source, trial_seed=0,
                  hparams_seed=0, algorithm="DGE", step_extras=step_extras)
    write_run(sweep, "erm_0", checkpoints, source=0, trial_seed=0, hparams_seed=0, algorithm="ERM")
    output = run_module("domainbed_dge.collect_results", "--input_dir", str(sweep), cwd=tmp_path).stdout
    rows = text_table(output, f"{DATASET}: DGE's equilibrium over training, {OVER_TRAINING}")
    assert rows == [
        ["Method", "quantity", "0", "1"],
        ["DGE", "mean w_k", "1.000", "0.500"],  # (0.6 + 0.4) / 2
        ["DGE", "dge_net_vs_gradavg", "0.000", "0.400"],
        ["DGE", "dge_adjusted_pairs", "X", "X"],
    ]


def test_own_diagnostics_are_every_other_logged_number_of_a_method(tmp_path):
    sweep = tmp_path / "sweep"
    checkpoints = [([1.0, .5, .5], [.5] * 3)] * 2
    # GSAM logs perturbation_norm .1, .3 from source 0 and .3, .5 from source 1; DGE's
    # weights and dge_net_vs_gradavg are the equilibrium table's, its pair_conflict_fraction
    # is its own; ERM logs nothing of its own and has no row.
    for source, norms in [(0, [.1, .3]), (1, [.3, .5])]:
        write_run(sweep, f"gsam_{source}", checkpoints, source=source, trial_seed=0, hparams_seed=0,
                  algorithm="GSAM", step_extras=[{"perturbation_norm": norm} for norm in norms])
    write_run(sweep, "dge_0", checkpoints, source=0, trial_seed=0, hparams_seed=0, algorithm="DGE",
              extra={"dge_weight_0": 1.0, "dge_net_vs_gradavg": 0.2, "pair_conflict_fraction": 0.25})
    write_run(sweep, "erm_0", checkpoints, source=0, trial_seed=0, hparams_seed=0, algorithm="ERM")
    output = tables.report(str(sweep), load_runs(str(sweep)), "text")
    rows = text_table(output, f"{DATASET}: each method's own diagnostics over training, {OVER_TRAINING}")
    assert rows == [
        ["Method", "quantity", "0", "1"],
        ["DGE", "pair_conflict_fraction", "0.250", "0.250"],
        ["GSAM", "perturbation_norm", "0.200", "0.400"],
    ]


def test_learning_curves_average_the_selected_runs_at_each_common_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    # Source 0 scores .5, .7, .9 on its out split (env0), source 1 scores .6, .8 on env1
    # and logs steps 0 and 1 only, so step 2 has no column; train_record's loss is 1 / (step + 1).
    write_run(sweep, "dge_0", [([1.0, .5, .5], [.5, .1, .1]), ([1.0, .5, .5], [.7, .1, .1]),
                               ([1.0, .5, .5], [.9, .1, .1])], source=0, trial_seed=0, hparams_seed=0,
              algorithm="DGE")
    write_run(sweep, "dge_1", [([.5, 1.0, .5], [.1, .6, .1]), ([.5, 1.0, .5], [.1, .8, .1])], source=1,
              trial_seed=0, hparams_seed=0, algorithm="DGE")
    write_run(sweep, "erm_0", [([1.0, .5, .5], [.4, .1, .1])] * 3, source=0, trial_seed=0, hparams_seed=0,
              algorithm="ERM")
    output = run_module("domainbed_dge.collect_results", "--input_dir", str(sweep), cwd=tmp_path).stdout
    rows = text_table(output, f"{DATASET}: learning curves of the selected runs, by checkpoint step: mean over "
                              "the runs of every source and trial")
    assert rows == [
        ["Method", "quantity", "0", "1"],
        ["ERM", "source validation accuracy (%)", "40.0", "40.0"],
        ["ERM", "training loss", "1.000", "0.500"],
        ["DGE", "source validation accuracy (%)", "55.0", "75.0"],  # (50 + 60) / 2, (70 + 80) / 2
        ["DGE", "training loss", "1.000", "0.500"],
    ]
    assert "own diagnostics" not in output  # no method logs a number of its own

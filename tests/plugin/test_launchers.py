"""The submitit command launcher: its settings, real jobs through submitit's local
executor, and its registration into DomainBed's launcher registry."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import subprocess_env
from domainbed_dge.plugin.launchers import DEFAULT_TIMEOUT_MIN, LauncherConfig, LauncherConfigError, submitit_launcher

needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("submitit") is None, reason="needs submitit (pip install 'domainbed-dge[experiments]')"
)


def local_environ(tmp_path, **settings) -> dict[str, str]:
    environ = {"DGE_SUBMITIT_CLUSTER": "local", "DGE_SUBMITIT_FOLDER": str(tmp_path / "logs" / "%j")}
    environ.update({f"DGE_SUBMITIT_{name.upper()}": value for name, value in settings.items()})
    return environ


def python_command(code: str) -> str:
    """A shell command running ``code`` with this interpreter."""
    return f"{sys.executable} -c \"{code}\""


def test_config_defaults_and_parameters():
    config = LauncherConfig.from_environment({})
    assert config.cluster is None and config.wait is False
    assert config.executor_parameters() == {"name": "domainbed", "timeout_min": DEFAULT_TIMEOUT_MIN}
    config = LauncherConfig.from_environment({
        "DGE_SUBMITIT_CLUSTER": "slurm", "DGE_SUBMITIT_PARTITION": "gpu", "DGE_SUBMITIT_GPUS": "1",
        "DGE_SUBMITIT_CPUS": "8", "DGE_SUBMITIT_MEM_GB": "32.5", "DGE_SUBMITIT_TIMEOUT_MIN": "90",
        "DGE_SUBMITIT_ARRAY_PARALLELISM": "16", "DGE_SUBMITIT_WAIT": "1", "DGE_SUBMITIT_FOLDER": "/x/%j",
    })
    assert (config.cluster, config.folder, config.wait) == ("slurm", "/x/%j", True)
    assert config.executor_parameters() == {
        "name": "domainbed", "timeout_min": 90, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32.5,
        "slurm_partition": "gpu", "slurm_array_parallelism": 16,
    }


@pytest.mark.parametrize(
    "variable, value, allowed",
    [
        ("CLUSTER", "pbs", "slurm, local"),
        ("GPUS", "-1", "an integer >= 0"),
        ("CPUS", "0", "an integer >= 1"),
        ("TIMEOUT_MIN", "ten", "an integer >= 1"),
        ("MEM_GB", "0", "a number > 0"),
        ("ARRAY_PARALLELISM", "1.5", "an integer >= 1"),
        ("WAIT", "yes", "0 or 1"),
    ],
)
def test_config_rejects_bad_values_naming_them(variable, value, allowed):
    with pytest.raises(LauncherConfigError) as error:
        LauncherConfig.from_environment({f"DGE_SUBMITIT_{variable}": value})
    assert f"DGE_SUBMITIT_{variable}={value!r}" in str(error.value)
    assert allowed in str(error.value)


@needs_submitit
def test_local_jobs_run_and_failures_are_reported(tmp_path, capsys):
    outputs = [tmp_path / "first.txt", tmp_path / "second.txt"]
    commands = [python_command(f"open(r'{path}', 'w').write('job {index}')") for index, path in enumerate(outputs)]
    commands.append("echo failing on purpose >&2; exit 3")
    submitit_launcher(commands, environ=local_environ(tmp_path, array_parallelism="2"))
    assert [path.read_text() for path in outputs] == ["job 0", "job 1"]
    printed = capsys.readouterr().out
    assert "submitit (local): 3 jobs" in printed
    assert "3 jobs ended, 2 succeeded, 1 failed" in printed
    failed_log = printed.split("its log: ")[1].split()[0]
    assert "failing on purpose" in open(failed_log).read()


@needs_submitit
def test_local_parallelism_one_runs_jobs_one_after_the_other(tmp_path, capsys):
    log = tmp_path / "intervals.txt"
    code = (f"import time; start = time.time(); time.sleep(0.3); "
            f"open(r'{log}', 'a').write(f'{{start}} {{time.time()}}\\n')")
    submitit_launcher([python_command(code)] * 3, environ=local_environ(tmp_path, array_parallelism="1"))
    intervals = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(intervals) == 3
    for (_, end), (next_start, _) in zip(intervals, intervals[1:]):
        assert next_start >= end
    assert "3 jobs ended, 3 succeeded, 0 failed" in capsys.readouterr().out


@needs_submitit
@pytest.mark.parametrize(
    "launcher_sees, gpus, job_sees",
    [
        ("3,5", None, "3,5"),      # DomainBed's local launcher passes the GPUs through
        (None, None, "unset"),     # all GPUs, as the launcher sees them
        ("3,5", "1", "0"),         # DGE_SUBMITIT_GPUS: submitit's first N GPUs
    ],
)
def test_local_jobs_see_the_launchers_gpus_unless_gpus_are_set(tmp_path, launcher_sees, gpus, job_sees):
    environ = local_environ(tmp_path, **({"gpus": gpus} if gpus else {}))
    if launcher_sees is not None:
        environ["CUDA_VISIBLE_DEVICES"] = launcher_sees
    seen = tmp_path / "seen.txt"
    code = f"import os; open(r'{seen}', 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"
    submitit_launcher([python_command(code)], environ=environ)
    assert seen.read_text() == job_sees


@pytest.mark.domainbed
def test_registered_into_domainbed_in_a_fresh_interpreter(tmp_path):
    code = "from domainbed import command_launchers as c; f = c.REGISTRY['submitit']; print(f.__module__, f.__name__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["domainbed_dge.plugin.launchers", "submitit_launcher"]
    assert result.stderr == ""


@pytest.mark.parametrize("text", ["nan", "inf"])
def test_memory_must_be_a_finite_number(text):
    with pytest.raises(LauncherConfigError, match=f"DGE_SUBMITIT_MEM_GB='{text}' is not allowed"):
        LauncherConfig.from_environment({"DGE_SUBMITIT_MEM_GB": text})

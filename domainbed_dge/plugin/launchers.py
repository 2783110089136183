"""A ``submitit`` command launcher for DomainBed's sweeps: Slurm, or local processes.

    DGE_SUBMITIT_PARTITION=gpu DGE_SUBMITIT_GPUS=1 \\
        python -m domainbed_dge.sweep launch --command_launcher submitit ...

The start-up hook adds it to ``domainbed.command_launchers.REGISTRY`` as ``submitit``,
so DomainBed's own ``python -m domainbed.scripts.sweep`` offers it too. Each job runs
one of the sweep's shell commands (DomainBed's literal ``python -m
domainbed.scripts.train ...``) with ``/bin/sh``, so ``python`` must be the interpreter
that has this plugin and DomainBed, on the machine that runs the job.

Configured by environment variables (unset means the default):

``DGE_SUBMITIT_CLUSTER``
    ``slurm`` or ``local`` (jobs as processes on this machine, through submitit's
    LocalExecutor; used by the tests). Default: submitit's choice, Slurm where
    ``sbatch`` exists, else local.
``DGE_SUBMITIT_FOLDER``
    where submitit writes each job's logs and pickles; ``%j`` is the job id.
    Default: ``submitit_logs/%j`` under the working directory.
``DGE_SUBMITIT_PARTITION``
    the Slurm partition. Default: the cluster's default partition.
``DGE_SUBMITIT_GPUS``
    GPUs per job (integer >= 0). Slurm default: none. Local: each job gets the first
    that many GPUs; unset, jobs see the GPUs this process sees (its
    ``CUDA_VISIBLE_DEVICES``, or all), as with DomainBed's ``local`` launcher.
    submitit's own local default would hide every GPU (``CUDA_VISIBLE_DEVICES=""``)
    and train on the CPU.
``DGE_SUBMITIT_CPUS``
    CPUs per job (integer >= 1). Default: submitit's (one).
``DGE_SUBMITIT_MEM_GB``
    memory per job in GB (number > 0). Default: the cluster's default.
``DGE_SUBMITIT_TIMEOUT_MIN``
    time limit per job in minutes (integer >= 1). Default: 1440 (submitit's own
    default, 5 minutes, would kill most DomainBed runs).
``DGE_SUBMITIT_ARRAY_PARALLELISM``
    most jobs running at once (integer >= 1). Slurm: the job array's parallelism
    (default: submitit's, 256). Local: concurrent processes (default: 1, one job
    after the other as DomainBed's ``local`` launcher).
``DGE_SUBMITIT_WAIT``
    ``1`` keeps the launcher running until every Slurm job has ended and reports
    the failed ones; ``0`` submits and returns. Default: ``0``. Local jobs are always
    waited for (they are this process's children).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

CLUSTERS = ("slurm", "local")
DEFAULT_FOLDER = os.path.join("submitit_logs", "%j")
DEFAULT_TIMEOUT_MIN = 24 * 60
DEFAULT_LOCAL_PARALLELISM = 1
#: Seconds between two looks at running local jobs.
POLL_SECONDS = 0.5
JOB_NAME = "domainbed"


class LauncherConfigError(ValueError):
    """An environment variable of the launcher has a value it cannot use."""


@dataclass(frozen=True)
class LauncherConfig:
    """The launcher's settings, read from ``DGE_SUBMITIT_*`` variables."""

    cluster: str | None = None
    folder: str = DEFAULT_FOLDER
    partition: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    timeout_min: int = DEFAULT_TIMEOUT_MIN
    array_parallelism: int | None = None
    wait: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> LauncherConfig:
        def get(name: str) -> str | None:
            value = environ.get(f"DGE_SUBMITIT_{name}", "").strip()
            return value or None

        cluster = get("CLUSTER")
        if cluster is not None and cluster not in CLUSTERS:
            raise LauncherConfigError(
                f"DGE_SUBMITIT_CLUSTER={cluster!r} is not allowed; allowed: {', '.join(CLUSTERS)} (or unset)"
            )
        wait = get("WAIT")
        if wait not in (None, "0", "1"):
            raise LauncherConfigError(f"DGE_SUBMITIT_WAIT={wait!r} is not allowed; allowed: 0 or 1 (or unset)")
        return cls(
            cluster=cluster,
            folder=get("FOLDER") or DEFAULT_FOLDER,
            partition=get("PARTITION"),
            gpus=_parse_number(environ, "GPUS", int, minimum=0),
            cpus=_parse_number(environ, "CPUS", int, minimum=1),
            mem_gb=_parse_number(environ, "MEM_GB", float, minimum=0, strict=True),
            timeout_min=_parse_number(environ, "TIMEOUT_MIN", int, minimum=1) or DEFAULT_TIMEOUT_MIN,
            array_parallelism=_parse_number(environ, "ARRAY_PARALLELISM", int, minimum=1),
            wait=wait == "1",
        )

    def executor_parameters(self) -> dict:
        """Keyword arguments for ``AutoExecutor.update_parameters``."""
        parameters = {"name": JOB_NAME, "timeout_min": self.timeout_min}
        optional = {
            "gpus_per_node": self.gpus,
            "cpus_per_task": self.cpus,
            "mem_gb": self.mem_gb,
            "slurm_partition": self.partition,
            "slurm_array_parallelism": self.array_parallelism,
        }
        parameters.update({key: value for key, value in optional.items() if value is not None})
        return parameters


def _parse_number(environ: Mapping[str, str], name: str, kind: type, *, minimum: float, strict: bool = False):
    variable = f"DGE_SUBMITIT_{name}"
    text = environ.get(variable, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        noun = "an integer" if kind is int else "a number"
        raise LauncherConfigError(f"{variable}={text!r} is not allowed; allowed: {noun} {bound}")
    return value


def run_shell_command(command: str, environment: Mapping[str, str | None] | None = None) -> None:
    """What each submitit job runs: ``command`` through the shell, with the variables
    of ``environment`` set (or removed, where None); a non-zero exit raises, so that
    submitit records the job as failed."""
    env = dict(os.environ)
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    subprocess.run(command, shell=True, check=True, env=env)


def local_job_environment(config: LauncherConfig, environ: Mapping[str, str]) -> dict[str, str | None]:
    """What a local job must take from this process's environment: its
    ``CUDA_VISIBLE_DEVICES`` (None: unset) when ``DGE_SUBMITIT_GPUS`` is unset.

    submitit's LocalExecutor sets each job's ``CUDA_VISIBLE_DEVICES`` to its first
    ``gpus_per_node`` GPUs, the empty string when none are asked for, so that a sweep
    on a GPU machine would train on the CPU without a word.
    """
    if config.gpus is not None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": environ.get("CUDA_VISIBLE_DEVICES")}


SUBMITIT_MISSING = "the submitit launcher needs submitit: pip install submitit (or 'domainbed-dge[experiments]')"


def configuration_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why :func:`submitit_launcher` would refuse to start, or None. A sweep asks before it
    makes its jobs' folders, so a bad setting leaves no job looking started."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        return SUBMITIT_MISSING
    try:
        LauncherConfig.from_environment(environ)
    except LauncherConfigError as error:
        return str(error)
    return None


def submitit_launcher(commands: Sequence[str], environ: Mapping[str, str] = os.environ) -> None:
    """DomainBed command launcher: run each command as a submitit job (see the module
    docstring for the ``DGE_SUBMITIT_*`` settings)."""
    try:
        import submitit
    except ImportError as error:
        raise SystemExit(SUBMITIT_MISSING) from error
    config = LauncherConfig.from_environment(environ)
    executor = submitit.AutoExecutor(folder=config.folder, cluster=config.cluster)
    executor.update_parameters(**config.executor_parameters())
    commands = list(commands)
    print(f"submitit ({executor.cluster}): {len(commands)} jobs, logs in {config.folder}", flush=True)
    if not commands:
        return
    if executor.cluster == "local":
        parallelism = config.array_parallelism or DEFAULT_LOCAL_PARALLELISM
        jobs = _run_local(executor, commands, parallelism, local_job_environment(config, environ))
        _report(jobs)
        return
    with executor.batch():
        jobs = [executor.submit(run_shell_command, command) for command in commands]
    print(f"submitit: submitted {len(jobs)} jobs ({', '.join(job.job_id for job in jobs[:3])}"
          f"{', ...' if len(jobs) > 3 else ''})", flush=True)
    if config.wait:
        _report(jobs)


def _run_local(executor, commands: list[str], parallelism: int, environment: Mapping[str, str | None]) -> list:
    """Keep at most ``parallelism`` local jobs running until all have run; return them."""
    pending = list(commands)
    jobs, running = [], []
    while pending or running:
        running = [job for job in running if not job.done()]
        while pending and len(running) < parallelism:
            job = executor.submit(run_shell_command, pending.pop(0), environment)
            jobs.append(job)
            running.append(job)
            print(f"submitit: [{len(jobs)}/{len(commands)}] started job {job.job_id}", flush=True)
        if running:
            time.sleep(POLL_SECONDS)
    return jobs


def _report(jobs: list) -> None:
    """Wait for the jobs and print how many failed, with where their logs are."""
    failed = [job for job in jobs if job.exception() is not None]
    print(f"submitit: {len(jobs)} jobs ended, {len(jobs) - len(failed)} succeeded, {len(failed)} failed", flush=True)
    for job in failed:
        print(f"submitit: job {job.job_id} failed; its log: {job.paths.stderr}", flush=True)


def waits_for_jobs(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether :func:`submitit_launcher` returns only once every job has ended: local
    jobs, or Slurm with ``DGE_SUBMITIT_WAIT=1``."""
    config = LauncherConfig.from_environment(environ)
    cluster = config.cluster or ("slurm" if shutil.which("sbatch") else "local")
    return cluster == "local" or config.wait


def register(module) -> None:
    """Add the launcher to ``domainbed.command_launchers.REGISTRY`` (idempotent)."""
    module.REGISTRY["submitit"] = submitit_launcher

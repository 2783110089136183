"""DomainBed's train.py, run many times by one Python process per test worker.

A one- or two-step train.py run in a fresh interpreter spends most of its time
importing torch and DomainBed. :class:`TrainServer` starts one interpreter that imports
them once and then runs ``domainbed.scripts.train`` on request as ``python -m`` would:
``runpy`` with ``run_name="__main__"``, ``sys.argv`` and the working folder set, the
run's file descriptors 1 and 2 in files of their own, and its exit status as the
process's would be (``SystemExit``'s code; 1 and the traceback on stderr for an
uncaught exception). train.py seeds every generator it uses, so a run does not depend
on the runs before it. A run that kills the server or outlasts the timeout fails its
own test only; the next run starts a new server.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
from pathlib import Path

#: The server's loop: one JSON request per line on stdin, one JSON reply per line on
#: the original stdout (kept as its own descriptor, since each run's fd 1 is a file).
SERVER = r"""
import json, os, runpy, sys, traceback
replies = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    request = json.loads(line)
    saved = (os.dup(1), os.dup(2))
    streams, argv, cwd = (sys.stdout, sys.stderr), sys.argv, os.getcwd()
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    status = 0
    try:
        os.chdir(request["cwd"])
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        if isinstance(exit.code, int) or exit.code is None:
            status = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
            status = 1
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr, *streams):
            try:
                stream.flush()
            except Exception:
                pass
        sys.stdout, sys.stderr = streams
        sys.argv = argv
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.chdir(cwd)
    replies.write(json.dumps({"status": status}) + "\n")
    replies.flush()
"""


class TrainServer:
    """Runs ``python -m domainbed.scripts.train ...`` in one long-lived interpreter."""

    MODULE = "domainbed.scripts.train"

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, env=self.env, text=True)
        return self.process

    def run(self, *args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
        """One train.py run with ``args`` from ``cwd``, as ``subprocess.run`` reports it."""
        process = self._start()
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"module": self.MODULE, "args": list(args), "cwd": str(cwd), "stdout": str(out),
                       "stderr": str(err)}
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], timeout)
            reply = process.stdout.readline() if ready else ""
            if reply:
                status, note = json.loads(reply)["status"], ""
            else:  # the run hung or killed the server: report it, and start anew next time
                if ready:
                    status, note = process.wait(), "died"
                else:
                    status, note = -9, f"timed out after {timeout} s"
                self.close()
                note = f"\n[train server: {note}, exit status {status}]"
            return subprocess.CompletedProcess(["python", "-m", self.MODULE, *args], status, _read(out),
                                               _read(err) + note)

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""

"""Launch U-Net training under torchrun: standalone on one machine, multi-node on Slurm.

Inside a Slurm allocation that spans several nodes, one torchrun agent is started per
node with ``srun`` and the agents meet at a c10d rendezvous on the allocation's first
host; otherwise torchrun runs ``--standalone`` on this machine. The number of processes
per node comes from ``train.nproc``.

The launched processes die with their parent (Linux ``PR_SET_PDEATHSIG``): torchrun
starts its workers in a session of their own, so killing the job's process group (as
Snakemake and Slurm do) would leave them running, writing checkpoints beside the
restarted job. The agent is bound to this launcher, each worker to its agent
(:func:`die_with_parent`, called by the trainer).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_RDZV_PORT = 29500
_PR_SET_PDEATHSIG = 1
# What a torchrun agent's command line holds (ours runs `python -m torch.distributed.run`).
AGENT_MARKERS = (b"torch.distributed.run", b"torchrun")


def die_with_parent(*, parent: int | None = None, markers: Sequence[bytes] = ()) -> bool:
    """Have the kernel SIGKILL this process when its parent exits (Linux; False
    elsewhere). If the parent is already gone (this process was re-parented before the
    call: its parent is no longer ``parent``, or no longer a process whose command line
    holds one of ``markers``), exit now."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    ppid = os.getppid()
    orphaned = ppid == 1 or (parent is not None and ppid != parent)
    if markers and not orphaned:
        try:
            cmdline = Path(f"/proc/{ppid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        orphaned = not any(marker in cmdline for marker in markers)
    if orphaned:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def in_torchrun_worker(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a worker started by a torchrun agent."""
    return "TORCHELASTIC_RUN_ID" in (os.environ if env is None else env)


def _run(cmd: Sequence[str]) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True).stdout


def slurm_hosts(env: Mapping[str, str], run=_run) -> list[str]:
    """Hostnames of the Slurm allocation we run in; empty outside Slurm.

    Uses SLURM_JOB_NODELIST when present, else asks ``scontrol`` about SLURM_JOB_ID (the
    Snakemake job step drops most SLURM_* variables but keeps the job id).
    """
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return []
    nodelist = env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        match = re.search(r"(?:^|\s)NodeList=(\S+)", run(["scontrol", "show", "job", "-o", job_id]))
        if not match or match.group(1) in ("", "(null)"):
            return []
        nodelist = match.group(1)
    return run(["scontrol", "show", "hostnames", nodelist]).split()


def torchrun_command(args: Sequence[str], *, nproc: int, hosts: Sequence[str] = (),
                     job_id: str | None = None, port: int = DEFAULT_RDZV_PORT,
                     python: str = sys.executable) -> list[str]:
    """The command that runs ``python -m ai4land ARGS`` under torchrun."""
    torchrun = [python, "-m", "torch.distributed.run"]
    if len(hosts) > 1:
        nnodes = len(hosts)
        return [
            "srun", "--overlap", f"--nodes={nnodes}", f"--ntasks={nnodes}",
            "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            *torchrun, f"--nnodes={nnodes}", f"--nproc_per_node={nproc}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={hosts[0]}:{port}",
            f"--rdzv_id=ai4land-{job_id or 'job'}",
            "-m", "ai4land", *args,
        ]
    return [*torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "ai4land", *args]


def launch(args: Sequence[str], *, nproc: int, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    hosts = slurm_hosts(env)
    port = int(env.get("AI4LAND_RDZV_PORT", DEFAULT_RDZV_PORT))
    cmd = torchrun_command(
        args, nproc=nproc, hosts=hosts, job_id=env.get("SLURM_JOB_ID"), port=port
    )
    where = f"{len(hosts)} Slurm nodes {','.join(hosts)}" if len(hosts) > 1 else "this machine"
    print(f"ai4land torchrun: {nproc} process(es) per node on {where}: {' '.join(cmd)}",
          file=sys.stderr, flush=True)
    launcher = os.getpid()
    # the agent (torchrun, or srun across nodes) dies with this launcher, in its group
    return subprocess.call(cmd, preexec_fn=lambda: die_with_parent(parent=launcher))

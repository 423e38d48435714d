"""ai4land torchrun: standalone on one machine, one agent per node across a Slurm
allocation; one trainer per model directory, and no worker outliving a killed job."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

from ai4land.errors import OutputError  # noqa: E402
from ai4land.io.cube import Cube  # noqa: E402
from ai4land.publish.regenerate import compare_manifest  # noqa: E402
from ai4land.samples.split import make_split  # noqa: E402
from ai4land.train.launch import slurm_hosts, torchrun_command  # noqa: E402
from ai4land.train.loop import exclusive_output, run_training  # noqa: E402


def test_outside_slurm_runs_standalone():
    assert slurm_hosts({}) == []
    cmd = torchrun_command(["train", "--config", "c.yaml"], nproc=2, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "ai4land", "train", "--config", "c.yaml"]


def test_multi_node_allocation_uses_srun_and_a_rendezvous_on_the_first_host():
    calls = []

    def run(cmd):
        calls.append(cmd)
        if cmd[:3] == ["scontrol", "show", "job"]:
            return "JobId=7 JobName=x NodeList=gpu[01-02] BatchHost=gpu01"
        return "gpu01\ngpu02\n"

    hosts = slurm_hosts({"SLURM_JOB_ID": "7"}, run=run)  # the job step keeps only the id
    assert hosts == ["gpu01", "gpu02"]
    assert calls[-1] == ["scontrol", "show", "hostnames", "gpu[01-02]"]
    cmd = torchrun_command(["train"], nproc=4, hosts=hosts, job_id="7", python="py")
    assert cmd[:6] == ["srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                       "--kill-on-bad-exit=1"]
    assert "--nnodes=2" in cmd and "--nproc_per_node=4" in cmd
    assert "--rdzv_endpoint=gpu01:29500" in cmd and "--rdzv_backend=c10d" in cmd
    assert "--standalone" not in cmd


def test_single_node_allocation_is_standalone():
    hosts = slurm_hosts({"SLURM_JOB_ID": "3", "SLURM_JOB_NODELIST": "n1"}, run=lambda cmd: "n1\n")
    assert "--standalone" in torchrun_command(["train"], nproc=2, hosts=hosts)


def test_compare_manifest_reports_by_file(tmp_path):
    import hashlib

    (tmp_path / "maps").mkdir()
    for name in ("a.tif", "b.tif", "c.tif"):
        (tmp_path / "maps" / name).write_bytes(name.encode())
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text("".join(f"{hashlib.sha256(n.encode()).hexdigest()}  maps/{n}\n"
                                for n in ("a.tif", "b.tif", "gone.tif")))
    (tmp_path / "maps/b.tif").write_bytes(b"changed")
    result = compare_manifest(manifest, tmp_path)
    assert (result.differ, result.missing, result.extra, result.same) == (
        ["maps/b.tif"], ["maps/gone.tif"], ["maps/c.tif"], 1)
    assert not result.ok and "DIFFERS  maps/b.tif" in result.lines()


# --- one trainer per model directory, and none outliving its job ----------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    write_tiny_cube(root / "cube")
    config = tiny_config(root / "cube", results=root / "results")
    land = np.asarray(Cube.from_config(config).static["land_mask"].values).astype(bool)
    split = make_split(land, block_size=16, n_test=2, n_val=2, buffer=1,
                       train_years=config.years.train, test_years=config.years.test, seed=0)
    split_path = root / "split.json"
    split_path.write_text(json.dumps(split.to_json()))
    return root, split_path


def test_a_second_trainer_on_the_same_model_directory_is_refused(tiny, tmp_path):
    root, split_path = tiny
    out = tmp_path / "model"
    with exclusive_output(out):
        with pytest.raises(OutputError, match=r"model: another trainer \(pid \d+ on .*\) is "
                                              "writing this model directory") as info:
            run_training(tiny_config(root / "cube"), output_dir=out, split_path=split_path)
        assert "\n" not in str(info.value)
        assert not (out / "checkpoints").exists()  # it stopped before writing anything
    with exclusive_output(out):  # released with its holder: the next trainer gets it
        assert f"pid {os.getpid()} " in (out / ".train.lock").read_text()


def _processes_with(text: str) -> dict[int, str]:
    """pid -> command line of the live (not zombie) processes whose command line holds
    ``text``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found[int(proc.name)] = cmdline
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_the_job_group_leaves_no_worker_and_a_rerun_resumes(tiny, tmp_path):
    """A real `ai4land torchrun` launch (2 gloo workers), killed as Snakemake kills a
    job: SIGKILL to its process group. torchrun's workers run in sessions of their own;
    none may survive, and the same command then resumes and finishes."""
    root, split_path = tiny
    out = tmp_path / "model"
    cfg = tmp_path / "c.yaml"
    train = dict(epochs=2, steps_per_epoch=30, batch_size=4, checkpoint_every=2,
                 val_batches=1, amp=False)
    cfg.write_text(yaml.safe_dump(tiny_config(root / "cube", train=train).model_dump(mode="json")))
    command = [sys.executable, "-m", "ai4land", "torchrun", "--nproc", "2", "--", "train",
               "--config", str(cfg), "--split", str(split_path), "--output", str(out)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", AI4LAND_RDZV_PORT="29517")
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=env, start_new_session=True)  # the job's process group
    steps = out / "steps.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and job.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert job.poll() is None, "training ended before it could be killed"
    running = _processes_with(str(out))
    workers = {pid for pid, cmd in running.items()
               if " -m ai4land train " in cmd and "torch.distributed.run" not in cmd}
    assert len(workers) == 2, running  # the two ranks, each in its own session
    assert all(os.getsid(pid) != os.getsid(job.pid) for pid in workers)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 5  # the kernel kills them at once; survivors would run on
    while time.monotonic() < deadline and _processes_with(str(out)):
        time.sleep(0.1)
    survivors = _processes_with(str(out))
    for pid in survivors:  # do not leave them running past a failed test
        os.kill(pid, signal.SIGKILL)
    assert survivors == {}, "a worker outlived the killed job"
    done = len(steps.read_text().splitlines())
    time.sleep(1)
    assert len(steps.read_text().splitlines()) == done, "something still writes the model"
    assert 4 <= done < 60

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / "model.pt").is_file()
    rows = [json.loads(line) for line in steps.read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 61))  # resumed, not restarted

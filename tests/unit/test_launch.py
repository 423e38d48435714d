"""ai4land torchrun: standalone on one machine, one agent per node across a Slurm allocation."""

from ai4land.launch import slurm_hosts, torchrun_command
from ai4land.regenerate import compare_manifest, config_digest


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


def test_config_digest_follows_only_its_keys(demo_config_dict):
    from ai4land.config import parse_config

    a = parse_config(demo_config_dict)
    changed = dict(demo_config_dict, predict={**demo_config_dict["predict"], "harmonize": False})
    b = parse_config(changed)
    assert config_digest(a, ["train"]) == config_digest(b, ["train"])
    assert config_digest(a, ["predict"]) != config_digest(b, ["predict"])


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

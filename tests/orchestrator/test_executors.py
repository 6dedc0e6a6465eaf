"""Executors: the same bits in process and on Ray; resources, retries, progress, address."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from orchestrator.executors import InProcessExecutor, RayExecutor, make_executor
from sisa.config import ResourcesConfig
from sisa.deletion.accept import forget
from sisa.evidence.status import status
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from sisa.training.trainer import state_digest
from storage import is_committed, tensor_hashes
from tests.conftest import tiny_config
from tests.sisa.deletion.test_accept import layout

pytestmark = pytest.mark.ray


def weights(url):
    """Each shard's final weights, by the hash of the tensors (a sealed file's own bytes
    differ from store to store)."""
    return [s["state_hash"] for s in status(url)["shards"]]


def _count_twice(job, progress):
    progress(1)
    progress(1)
    return job * 10


def _resources(job, progress):
    import ray

    progress(1)
    return ray.get_runtime_context().get_assigned_resources()


def test_ray_and_in_process_give_identical_shards(ray_cluster, tmp_path):
    cfg = tiny_config()
    local, remote = str(tmp_path / "local"), str(tmp_path / "ray")
    train(cfg, local, executor=InProcessExecutor(progress=False))
    train(cfg, remote, executor=RayExecutor(progress=False))
    assert weights(local) == weights(remote)
    forget(local, [5, 105, 205], executor=InProcessExecutor(progress=False))
    forget(remote, [5, 105, 205], executor=RayExecutor(progress=False))
    assert weights(local) == weights(remote)
    assert verify(remote, executor=RayExecutor(progress=False)).identical


@pytest.mark.parametrize("make", [lambda: InProcessExecutor(), lambda: RayExecutor()])
def test_progress_bar_covers_every_unit(ray_cluster, capsys, make):
    out = make().map(_count_twice, [1, 2, 3], resources=ResourcesConfig(), units=6, desc="stages")
    assert out == [10, 20, 30]
    err = capsys.readouterr().err
    assert "stages: 100%" in err and "6/6" in err


def _report_often(job, progress):
    started = time.monotonic()
    for _ in range(20):
        progress(1)
        time.sleep(0.01)
    return started, time.monotonic()


def test_reporting_progress_never_lets_more_jobs_run_than_cpus(ray_cluster):
    """A report that waited on the counter would lend the task's CPU to the next job."""
    spans = RayExecutor(progress=False).map(
        _report_often, list(range(6)), resources=ResourcesConfig(num_cpus=1), units=120, desc="p"
    )
    starts = sorted(s for s, _ in spans)
    running = [sum(s <= t < e for s, e in spans) for t in starts]
    assert max(running) <= ray_cluster.cluster_resources()["CPU"] == 2


def _over_report(job, progress):
    progress(2)
    time.sleep(0.5)  # the reports reach the counter before the job ends
    return job


@pytest.mark.parametrize("make", [lambda: InProcessExecutor(), lambda: RayExecutor()])
def test_progress_bar_never_passes_its_total(ray_cluster, capsys, make):
    out = make().map(_over_report, [1, 2], resources=ResourcesConfig(), units=2, desc="s")
    assert out == [1, 2]
    err = capsys.readouterr().err
    assert "2/2" in err and "4/2" not in err and "3/2" not in err


def _sleep_then_mark(path, progress):
    time.sleep(3)
    with open(path, "w") as f:
        f.write("ran to the end")


def test_an_interrupted_map_cancels_the_jobs_it_started(ray_cluster, tmp_path, monkeypatch):
    """Ctrl-C in the driver stops the shard jobs instead of leaving them writing unwatched."""
    marks = [str(tmp_path / f"job{i}") for i in range(2)]

    def interrupted_wait(*args, **kwargs):
        time.sleep(0.5)  # the jobs have started
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_cluster, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        RayExecutor(progress=False).map(
            _sleep_then_mark, marks, resources=ResourcesConfig(), units=2, desc="c"
        )
    time.sleep(4)
    assert not [m for m in marks if os.path.exists(m)]


def test_ray_tasks_get_the_configured_resources(ray_cluster):
    res = ResourcesConfig(num_cpus=0.5, num_gpus=0)
    out = RayExecutor(progress=False).map(_resources, [0], resources=res, units=1, desc="r")
    assert out[0]["CPU"] == 0.5


def test_a_killed_ray_task_is_retried_and_resumes(ray_cluster, tmp_path):
    """The worker dies (os._exit) right after committing a stage; Ray retries the task,
    which resumes from that stage. The result equals an uninterrupted run."""
    cfg = tiny_config(**{"sisa.shards": 1})
    marker = tmp_path / "crashed-once"
    env = {"SISA_CRASH_AT": f"after-stage-commit@{marker}"}
    flaky = RayExecutor(progress=False, task_options={"runtime_env": {"env_vars": env}})
    report = train(cfg, str(tmp_path / "flaky"), executor=flaky)
    assert marker.exists()  # it really died once
    assert report.shards[0].resumed == [1] and report.shards[0].trained == [2, 3]
    train(cfg, str(tmp_path / "clean"))
    assert weights(str(tmp_path / "flaky")) == weights(str(tmp_path / "clean"))


def checkpoints(url):
    """Per shard and stage: every tensor's hash and the optimizer state's digest, read back."""
    store = SisaStore(url)
    out = {}
    for shard in range(store.config().sisa.shards):
        for ref in store.shard_head(shard).stages:
            weights, extra = store.read_stage(ref)
            out[shard, ref.stage] = (tensor_hashes(weights), state_digest(extra))
    return out


def shard_files(url):
    """Files under shards/, each with whether its artifact is committed (heads are docs)."""
    store = SisaStore(url)

    def committed(rel):
        head = rel.endswith(".json") and rel.count("/") == 2  # shards/00000/g000001.json
        return head or is_committed(store.fs, rel.rsplit("/", 1)[0])

    return {rel: committed(rel) for rel in store.fs.walk("shards")}


def flaky_ray(marker, point):
    env = {"SISA_CRASH_AT": f"{point}@{marker}"}
    return RayExecutor(progress=False, task_options={"runtime_env": {"env_vars": env}})


def test_a_ray_worker_killed_mid_stage_is_retried_from_the_last_commit(ray_cluster, tmp_path):
    """SIGKILL one optimizer step into stage 2 of 3, before its checkpoint exists. Ray runs
    the task again; the retry takes stage 1 from its commit and trains stages 2 and 3 anew.
    Weights and optimizer state equal an uninterrupted in-process run, and nothing the dead
    worker began is left."""
    cfg = tiny_config(**{"sisa.shards": 1})
    marker = tmp_path / "crashed-once"
    flaky, clean = str(tmp_path / "flaky"), str(tmp_path / "clean")
    report = train(cfg, flaky, executor=flaky_ray(marker, "mid-stage#2"))
    assert marker.exists()  # it really died once
    assert report.shards[0].resumed == [1] and report.shards[0].trained == [2, 3]
    train(cfg, clean)
    assert checkpoints(flaky) == checkpoints(clean)
    files = shard_files(flaky)
    assert files == shard_files(clean) and all(files.values())


def test_a_ray_worker_killed_mid_stage_of_a_deletion_retrain_is_retried(ray_cluster, tmp_path):
    """The same kill while ``process`` retrains a shard without a deleted point."""
    cfg = tiny_config(**{"sisa.shards": 1})
    base = str(tmp_path / "base")
    train(cfg, base)
    ids, _, slices = layout(base)
    victim = int(ids[slices == 0][0])  # stage 1 onwards is retrained
    flaky, clean = str(tmp_path / "flaky"), str(tmp_path / "clean")
    shutil.copytree(base, flaky)
    shutil.copytree(base, clean)
    marker = tmp_path / "crashed-once"
    report = forget(flaky, [victim], executor=flaky_ray(marker, "mid-stage#2"))
    assert marker.exists()
    assert report.shards[0].resumed == [1] and report.shards[0].trained == [2, 3]
    forget(clean, [victim])
    assert checkpoints(flaky) == checkpoints(clean)
    files = shard_files(flaky)
    assert files == shard_files(clean) and all(files.values())
    assert verify(flaky).identical


def test_joining_a_running_cluster_by_address(ray_cluster, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    url = str(tmp_path / "joined")
    script = textwrap.dedent(
        f"""
        import ray
        from orchestrator.executors import RayExecutor
        from sisa.training.train import train
        from tests.conftest import tiny_config
        train(tiny_config(), {url!r}, executor=RayExecutor({address!r}, progress=False))
        assert ray.get_runtime_context().gcs_address == {address!r}
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=180)
    train(tiny_config(), str(tmp_path / "here"))
    assert weights(url) == weights(str(tmp_path / "here"))


@pytest.mark.parametrize(
    "resources, message",
    [
        (ResourcesConfig(num_gpus=0.5), "resources.num_gpus = 0.5"),
        (ResourcesConfig(num_cpus=3), "resources.num_cpus = 3"),
    ],
)
def test_a_task_no_node_can_hold_is_refused_not_left_pending(ray_cluster, resources, message):
    """A GPU asked of a CPU-only cluster (or more CPUs than any node has) would wait forever."""
    with pytest.raises(RuntimeError, match=message) as err:
        RayExecutor(progress=False).map(_count_twice, [1], resources=resources, units=2, desc="g")
    assert "2 CPU / 0 GPU" in str(err.value)


def _refuse(job, progress):
    from sisa.data.dataset import DataError

    raise DataError(f"no such file: {job!r}")


def test_a_job_error_surfaces_as_itself(ray_cluster):
    """The job's own error, as in process: callers (the CLI) catch it by type and print
    its one-line message; Ray's wrapper and the remote traceback stay behind as the cause."""
    from sisa.data.dataset import DataError

    with pytest.raises(DataError) as err:
        RayExecutor(progress=False).map(
            _refuse, ["x.npz"], resources=ResourcesConfig(), units=1, desc="e"
        )
    assert type(err.value) is DataError and str(err.value) == "no such file: 'x.npz'"


def test_ray_reports_where_each_job_ran(ray_cluster):
    executor = RayExecutor(progress=False)
    executor.map(_count_twice, [1, 2], resources=ResourcesConfig(), units=4, desc="p")
    assert executor.placements == [ray_cluster.get_runtime_context().get_node_id()] * 2


def test_a_shared_local_store_is_probed_and_left_clean(ray_cluster, tmp_path):
    """On one node the disk is shared: training runs, and the probe's marker is gone."""
    url = str(tmp_path / "fresh")
    train(tiny_config(**{"sisa.shards": 1}), url, executor=RayExecutor(progress=False))
    assert not [p for p in (tmp_path / "fresh").rglob("*") if "probe" in p.name]


def test_cuda_on_ray_without_a_gpu_share_is_refused(ray_cluster, tmp_path):
    """A task that reserves no GPU is given none by Ray, yet would see its node's GPUs."""
    cfg = tiny_config(**{"resources.device": "cuda", "resources.num_gpus": 0})
    url = tmp_path / "s"
    with pytest.raises(RuntimeError, match="needs resources.num_gpus > 0"):
        train(cfg, str(url), executor=RayExecutor(progress=False))
    assert not url.exists()  # refused before anything was written


def test_a_gpu_store_on_a_cluster_without_gpus_is_refused_before_writing(ray_cluster, tmp_path):
    cfg = tiny_config(**{"resources.device": "cuda", "resources.num_gpus": 0.25})
    url = tmp_path / "s"
    with pytest.raises(RuntimeError, match="resources.num_gpus = 0.25, and the nodes have"):
        train(cfg, str(url), executor=RayExecutor(progress=False))
    assert not url.exists()


def test_the_in_process_executor_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="resources.device = 'cuda' but"):
        InProcessExecutor(progress=False).check(ResourcesConfig(device="cuda"))
    InProcessExecutor(progress=False).check(ResourcesConfig())


def test_ray_refuses_process_local_stores(ray_cluster):
    with pytest.raises(ValueError, match="memory://"):
        train(tiny_config(), "memory://ray-cannot-see-this", executor=RayExecutor(progress=False))


def test_make_executor():
    assert isinstance(make_executor("local"), InProcessExecutor)
    assert isinstance(make_executor("ray", "auto"), RayExecutor)
    with pytest.raises(ValueError):
        make_executor("dask")
    with pytest.raises(ValueError):
        make_executor("local", "127.0.0.1:6379")


def test_a_local_cluster_starts_when_no_address_is_given(tmp_path):
    """`sisa train --executor ray` in a fresh process with no cluster to join."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    url = str(tmp_path / "local-ray")
    args = [
        "--set",
        "sisa.shards=2",
        "--set",
        "sisa.slices=2",
        "--set",
        "sisa.epochs=2",
        "--set",
        "model.hidden=[16]",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "train",
            "--store",
            url,
            "--executor",
            "ray",
            "--no-progress",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reference = str(tmp_path / "reference")
    train(
        tiny_config(**{"sisa.shards": 2, "sisa.slices": 2, "sisa.epochs": 2, "sisa.seed": 0}),
        reference,
    )
    assert weights(url) == weights(reference)


def assert_trains_and_forgets_the_same_on_ray(cfg, tmp_path) -> None:
    """A store trained and forgotten on Ray equals one in process; its shards take the
    backbone's 16 features (a frozen prefix's outputs, in "lora" mode)."""
    local, remote = str(tmp_path / "local"), str(tmp_path / "ray")
    train(cfg, local, executor=InProcessExecutor(progress=False))
    train(cfg, remote, executor=RayExecutor(progress=False))
    assert SisaStore(remote).intent()["input_shape"] == [16]
    assert weights(local) == weights(remote)
    forget(local, [5, 105], executor=InProcessExecutor(progress=False))
    forget(remote, [5, 105], executor=RayExecutor(progress=False))
    assert weights(local) == weights(remote)


def test_heads_on_a_backbone_are_the_same_bits_on_ray(ray_cluster, tmp_path):
    """The ingest job computes the features on a Ray worker: the same features, heads and
    forgetting as in process."""
    import torch
    from safetensors.torch import save_file

    from tests.sisa import backbones

    torch.manual_seed(5)
    save_file(backbones.tiny((64,)).state_dict(), str(tmp_path / "tiny.safetensors"))
    cfg = tiny_config(
        **{
            "model.finetune": "head",
            "model.backbone": "tests.sisa.backbones:tiny",
            "model.backbone_weights": str(tmp_path / "tiny.safetensors"),
            "model.hidden": [],
        }
    )
    assert_trains_and_forgets_the_same_on_ray(cfg, tmp_path)


def test_adapters_on_a_backbone_are_the_same_bits_on_ray(ray_cluster, tmp_path, monkeypatch):
    """ "lora" mode on Ray workers: the ingest stores the frozen prefix's outputs there, the
    shard tasks load the shared base there, and training and forgetting give the bits they
    give in process."""
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", "tests.sisa.backbones:*")  # retrain jobs
    cfg = tiny_config(
        **{
            "model.finetune": "lora",
            "model.backbone": "tests.sisa.backbones:stack",
            "model.lora_targets": ["block"],
            "model.lora_rank": 2,
            "model.lora_dropout": 0.1,
            "model.hidden": [],
        }
    )
    assert_trains_and_forgets_the_same_on_ray(cfg, tmp_path)


def test_a_sealed_store_trains_and_forgets_on_ray_with_the_kek_in_a_file(
    ray_cluster, tmp_path, monkeypatch
):
    """Ray's workers find the key-encryption key the way every process does: the cluster
    started without SISA_STORAGE__KEK, so they read ``storage.kek_file``. Their sealed
    store holds the bits of a plaintext one trained in process."""
    from storage.crypto import MAGIC
    from tests.conftest import sealed_with_kek_file

    monkeypatch.delenv("SISA_STORAGE__KEK", raising=False)
    sealed = sealed_with_kek_file(tmp_path)
    local, remote = str(tmp_path / "local"), str(tmp_path / "ray")
    train(tiny_config(**sealed), remote, executor=RayExecutor(progress=False))
    # placed alike: the key store keys the sealed store's placement
    inline = InProcessExecutor(progress=False)
    train(tiny_config(), local, executor=inline, placement_like=SisaStore(remote))
    assert weights(local) == weights(remote)
    forget(local, [5, 105], executor=InProcessExecutor(progress=False))
    forget(remote, [5, 105], executor=RayExecutor(progress=False))
    assert weights(local) == weights(remote)
    store = SisaStore(remote)
    stage = store.shard_head(0).stages[-1]
    assert store.read_bytes(f"{stage.dir}/weights.safetensors").startswith(MAGIC)

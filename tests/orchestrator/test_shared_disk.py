"""The shared-disk check on the session's one-node Ray cluster: a local store that the node
shares passes and is left clean; nodes are remembered per store; nodes a job could not run
on are not asked. (A node that does not share the store: tests/orchestrator/test_multinode.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orchestrator.executors import RayExecutor
from orchestrator.shared_disk import SharedDiskCheck, nodes_for
from sisa.config import ResourcesConfig

pytestmark = pytest.mark.ray


@dataclass(frozen=True)
class Job:
    url: str
    storage_options: dict = field(default_factory=dict)


def _double(job, progress):
    return 2


def test_a_shared_store_passes_and_the_probe_leaves_nothing(ray_cluster, tmp_path):
    deep = tmp_path / "a" / "b" / "store"
    check = SharedDiskCheck()
    check.require([Job(str(deep))], ResourcesConfig(), {})
    assert list(tmp_path.iterdir()) == []  # not even the folders it had to create
    node = ray_cluster.get_runtime_context().get_node_id()
    assert check._seen == {(str(deep), "{}"): {node}}


def test_object_stores_and_jobs_without_a_store_are_not_probed(ray_cluster):
    check = SharedDiskCheck()
    check.require([Job("memory://x"), 3, Job("")], ResourcesConfig(), {})
    assert check._seen == {}


def test_nodes_a_job_cannot_run_on_are_not_asked(ray_cluster, tmp_path):
    everyone = nodes_for(ResourcesConfig(), {})
    assert len(everyone) == 1
    assert nodes_for(ResourcesConfig(), {"resources": {"nfs": 1}}) == []
    assert nodes_for(ResourcesConfig(), {"accelerator_type": "H100"}) == []
    assert nodes_for(ResourcesConfig(num_gpus=0.5), {}) == []
    check = SharedDiskCheck()
    check.require([Job(str(tmp_path / "s"))], ResourcesConfig(), {"resources": {"nfs": 1}})
    assert check._seen[(str(tmp_path / "s"), "{}")] == set()


def test_the_check_can_be_left_to_the_caller(ray_cluster, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("probed")

    monkeypatch.setattr(SharedDiskCheck, "require", refuse)
    jobs = [Job(str(tmp_path / "s"))]
    executor = RayExecutor(progress=False, check_shared_disk=False)
    assert executor.map(_double, jobs, resources=ResourcesConfig(), units=1, desc="d") == [2]
    with pytest.raises(AssertionError, match="probed"):
        RayExecutor(progress=False).map(
            _double, jobs, resources=ResourcesConfig(), units=1, desc="d"
        )

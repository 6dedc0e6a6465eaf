"""Train, forget and verify on a Ray cluster of several nodes on this machine, with the store
on S3 (the moto server the calling test started). Run as a child process, since a process
joins one Ray cluster only, and the test session's shared cluster has a single node:

    python -m tests.orchestrator.multinode S3_URL OPTIONS_JSON WORKDIR

It prints one JSON line: the weights of every shard after training and after forgetting,
the nodes that ran the jobs, and what a file:// store that the nodes do not share gave.
"""

from __future__ import annotations

import json
import os
import sys

FORGET = [5, 105, 205, 306]
CONFIG = {"sisa.shards": 4, "data.source": "synthetic-purchase", "data.n": 3000}


def main(url: str, options: dict, workdir: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.executors import RayExecutor
    from sisa.deletion.accept import forget
    from sisa.evidence.status import status
    from sisa.evidence.verify import verify
    from sisa.training.train import train
    from tests.conftest import tiny_config

    # A head that runs no jobs and two worker nodes of one CPU each: every job runs on a
    # worker node, and jobs submitted together land on both.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 << 20},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=80 << 20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        out: dict = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
        executor = RayExecutor(progress=False)
        cfg = tiny_config(**CONFIG)
        train(cfg, url, options, executor=executor)
        out["train_placements"] = executor.placements
        out["trained"] = _weights(status(url, options))
        # The driver never generated the data: the ingest job did, on a worker node.
        out["driver_generated_data"] = "sisa.data.purchase" in sys.modules
        forget(url, FORGET, storage_options=options, executor=executor)
        out["forget_placements"] = executor.placements
        out["forgotten"] = _weights(status(url, options))
        out["verified"] = verify(url, storage_options=options, executor=executor).identical

        # A local path that the jobs' processes resolve elsewhere (the job's runtime
        # environment gives them their own working directory), as on machines that share
        # no disk.
        ray.shutdown()
        os.chdir(workdir)
        os.makedirs("code", exist_ok=True)
        ray.init(
            address=cluster.address,
            runtime_env={"working_dir": "code"},
            log_to_driver=False,
            configure_logging=False,
        )
        try:
            train(cfg, "/proc/self/cwd/store", executor=RayExecutor(progress=False))
            out["unshared"] = "accepted"
        except ValueError as err:
            out["unshared"] = str(err)
        out["unshared_left"] = sorted(os.listdir("store")) if os.path.isdir("store") else []
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


def _weights(report: dict) -> list[str]:
    return [s["weights_sha256"] for s in report["shards"]]


if __name__ == "__main__":
    result = main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
    print(json.dumps(result))

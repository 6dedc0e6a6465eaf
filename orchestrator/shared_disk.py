"""Whether every Ray node that may run a job sees the same local store as this process.

A store on local disk (a path, ``file://``) works on a cluster only if every node mounts
it at the same path (NFS). A job on a node that sees another disk (another machine, a
container with its own file system) would write its checkpoints where no other process
ever finds them, and the run would fail later, or worse, look done. So before jobs are
submitted: write a marker with a random token into the store, read it back from each node
that could run them (through the jobs' own runtime environment, pinned to that node), and
refuse if any node reads something else. Nodes are remembered per store once seen to
share it; nodes that join later are checked the next time jobs are submitted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from sisa.config import ResourcesConfig
from sisa.store.layout import PROBE_PREFIX
from storage import Store

PROBE_TIMEOUT_S = 300  # the probe tasks set up the jobs' runtime environment on each node


class SharedDiskCheck:
    """Remembers, per local store, the nodes seen to share it; probes the others."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], set[str]] = {}

    def require(self, jobs: Any, resources: ResourcesConfig, task_options: dict[str, Any]) -> None:
        """Raise ``ValueError`` if a node that may run ``jobs`` does not share their store."""
        stores = {}
        for job in jobs:
            url = getattr(job, "url", "")
            if url:
                options = getattr(job, "storage_options", {})
                stores[(url, json.dumps(options, sort_keys=True, default=str))] = (url, options)
        for key, (url, options) in stores.items():
            store = Store(url, options)
            if store.protocol not in ("file", "local"):
                continue
            seen = self._seen.setdefault(key, set())
            nodes = [n for n in nodes_for(resources, task_options) if n["NodeID"] not in seen]
            if nodes:
                _probe(store, nodes, task_options)
                seen.update(n["NodeID"] for n in nodes)


def nodes_for(resources: ResourcesConfig, task_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Alive nodes with the CPUs, GPUs, custom resources and accelerator a job asks for."""
    import ray

    wanted = {"CPU": resources.num_cpus, "GPU": resources.num_gpus}
    wanted |= task_options.get("resources") or {}
    if task_options.get("accelerator_type"):
        wanted[f"accelerator_type:{task_options['accelerator_type']}"] = 0.001
    return [
        n
        for n in ray.nodes()
        if n.get("Alive")
        and all(n.get("Resources", {}).get(k, 0) >= v for k, v in wanted.items() if v > 0)
    ]


def _probe(store: Store, nodes: list[dict[str, Any]], task_options: dict[str, Any]) -> None:
    import ray
    from ray.exceptions import GetTimeoutError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    rel = f"{PROBE_PREFIX}{token}"
    created = _missing_folders(Path(store.path(rel)).parent)
    store.write_bytes(rel, token.encode())
    try:
        env = {k: v for k, v in task_options.items() if k == "runtime_env"}
        probe = ray.remote(_read_token)
        refs = [
            probe.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                **env,
            ).remote(store.path(rel))
            for n in nodes
        ]
        try:
            seen = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        except GetTimeoutError:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise RuntimeError(
                f"could not check within {PROBE_TIMEOUT_S} s that every Ray node sees the "
                f"local store {store.url} (setting up the jobs' runtime environment?); "
                "RayExecutor(check_shared_disk=False) skips the check"
            ) from None
    finally:
        store.delete(rel)
        for folder in created:  # leave no trace where nothing was (empty folders only)
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    blind = [n for n, got in zip(nodes, seen, strict=True) if got != token]
    if blind:
        where = ", ".join(sorted({n.get("NodeManagerAddress", "?") for n in blind}))
        raise ValueError(
            f"the store {store.url} is on local disk, and {len(blind)} of the {len(nodes)} "
            f"Ray nodes that would run its jobs ({where}) do not see this process's copy of "
            "it: their checkpoints would be written where no other process finds them. "
            "Use a path every node shares (NFS), or an object store such as s3:// with "
            "--storage-options"
        )


def _missing_folders(folder: Path) -> list[Path]:
    """The folders a write into ``folder`` will create, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _read_token(path: str) -> str | None:
    """What a node sees at ``path``: the driver's token, if it shares the disk."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None

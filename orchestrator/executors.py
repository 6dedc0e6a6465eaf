"""Executors: where shard jobs run. In this process, or as one Ray task per shard.

Both satisfy ``sisa.training.jobs.Executor`` and show one progress bar over shards x stages. Jobs
are plain data and resumable, so the result does not depend on the executor, and a Ray
task that dies (worker lost, node gone) is retried and resumes from its last committed
stage.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm import tqdm

from orchestrator.shared_disk import SharedDiskCheck
from sisa.config import ResourcesConfig
from sisa.training.environment import require_device
from sisa.training.factories import TRUST_ENV
from sisa.training.jobs import Progress

J = TypeVar("J")
R = TypeVar("R")


def _bar(units: int, desc: str, show: bool) -> tqdm:
    """A bar over ``units`` stages; none for work that counts no stages (``units=0``)."""
    return tqdm(
        total=units, desc=desc, unit="stage", disable=not show or units == 0, file=sys.stderr
    )


def _advance(bar: tqdm, units: int) -> None:
    """Move the bar on, never past its total (a resumed job may report work twice)."""
    bar.update(max(0, min(units, bar.total - bar.n)))


class InProcessExecutor:
    """Runs shard jobs one after another in the calling process."""

    remote = False  # its jobs die with the caller (``storage.Lease``)

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def check(self, resources: ResourcesConfig) -> None:
        """Shard jobs run here: ``resources.device`` must be usable in this process."""
        require_device(resources.device)

    def map(
        self,
        fn: Callable[[J, Progress], R],
        jobs: Sequence[J],
        *,
        resources: ResourcesConfig,
        units: int,
        desc: str,
    ) -> list[R]:
        with _bar(units, desc, self.progress) as bar:
            return [fn(job, functools.partial(_advance, bar)) for job in jobs]


def with_trust(options: dict[str, Any]) -> dict[str, Any]:
    """Ray task or actor options whose workers decide trust the way this process does:
    ``SISA_TRUSTED_FACTORIES``, where set here, joins their ``runtime_env``. A worker
    inherits the environment of the node that started it, not this process's."""
    options = dict(options)
    if os.environ.get(TRUST_ENV):
        env = dict(options.get("runtime_env", {}).get("env_vars", {}))
        env.setdefault(TRUST_ENV, os.environ[TRUST_ENV])
        options["runtime_env"] = options.get("runtime_env", {}) | {"env_vars": env}
    return options


class RayExecutor:
    """One Ray task per shard job, with the per-task resources from the config.

    ``address`` joins an existing cluster (``"auto"``, ``"ray://..."`` or ``"host:port"``);
    with no address, a local Ray instance starts (unless this process is already connected).
    ``init_kwargs`` pass through to ``ray.init`` (``num_cpus``, ``object_store_memory``...),
    ``task_options`` to every task's ``.options`` (``runtime_env``, ``scheduling_strategy``...).
    A task that no node of the cluster can hold (a GPU asked of a CPU-only cluster) is
    refused before it is submitted, since Ray would leave it pending forever; a cluster
    that adds nodes on demand (an autoscaler) wants ``check_resources=False``. A store on
    local disk is used only once every node that could run a job was seen to share it
    (``orchestrator.shared_disk``); ``check_shared_disk=False`` trusts the caller.

    GPUs: ``resources.device = "cuda"`` needs ``resources.num_gpus > 0``; a fraction packs
    several shard tasks on one GPU (0.25: four). Ray gives each task the GPU it assigned
    as ``CUDA_VISIBLE_DEVICES``, so "cuda" in the task is that GPU. A GPU task runs in a
    fresh worker process (Ray's ``max_calls=1`` for GPU tasks): a reused worker would keep
    the CUDA context of the GPU an earlier task was given, and its cached memory.
    """

    remote = True  # its tasks may outlive the caller (``storage.Lease``)

    def __init__(
        self,
        address: str | None = None,
        *,
        max_retries: int = 3,
        progress: bool = True,
        init_kwargs: dict[str, Any] | None = None,
        task_options: dict[str, Any] | None = None,
        check_resources: bool = True,
        check_shared_disk: bool = True,
    ) -> None:
        if importlib.util.find_spec("ray") is None:
            raise RuntimeError("the Ray executor needs Ray: pip install 'sisa[ray]'")
        self.address = address
        self.task_options = dict(task_options or {})
        self.max_retries = max_retries
        self.progress = progress
        self.check_resources = check_resources
        self.check_shared_disk = check_shared_disk
        self._shared_disk = SharedDiskCheck()
        self.placements: list[str] = []  # the node ID that ran each job of the last map
        self.init_kwargs = {"include_dashboard": False, "log_to_driver": False} | (
            init_kwargs or {}
        )

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        ray.init(address=self.address, **self.init_kwargs)

    def check(self, resources: ResourcesConfig) -> None:
        """Refuse, before anything is submitted, shard tasks that would never run or would
        use a GPU Ray did not give them. Connects to the cluster."""
        if resources.device == "cuda" and resources.num_gpus == 0:
            raise RuntimeError(
                "resources.device = 'cuda' on Ray needs resources.num_gpus > 0: a task that "
                "reserves no GPU is not assigned one, and would train on whatever GPU its "
                "node shows first, beside tasks Ray did give it to. A fraction packs shard "
                "tasks on one GPU (resources.num_gpus = 0.25: four per GPU)"
            )
        self._connect()
        if self.check_resources:
            require_a_node_that_fits(resources.num_cpus, resources.num_gpus)

    def map(
        self,
        fn: Callable[[J, Progress], R],
        jobs: Sequence[J],
        *,
        resources: ResourcesConfig,
        units: int,
        desc: str,
    ) -> list[R]:
        import ray

        for job in jobs:
            url = getattr(job, "url", "")
            if url.startswith("memory://"):
                raise ValueError(
                    "memory:// stores live inside one process; Ray workers cannot see them. "
                    "Use file://, s3:// or another shared store with the Ray executor."
                )
        if not jobs:
            return []
        self.check(resources)
        if self.check_shared_disk:
            self._shared_disk.require(jobs, resources, self.task_options)
        counter = _progress_counter_class().remote()
        options = with_trust(self.task_options)
        # the resources go to ray.remote, not .options: only there does a GPU task get
        # max_calls=1 (a fresh worker per task; see the class docstring)
        task = ray.remote(
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )(_run_reporting).options(**options)
        refs = [task.remote(fn, job, counter) for job in jobs]
        pending = list(refs)
        try:
            with _bar(units, desc, self.progress) as bar:
                while pending:
                    _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
                    _advance(bar, _take(counter))
                try:
                    placed = ray.get(refs)
                except ray.exceptions.RayTaskError as err:
                    # The job's own error (bad data, a refused store), as the in-process
                    # executor raises it; the remote traceback stays attached as the cause.
                    if isinstance(err.cause, Exception):
                        raise err.cause from err
                    raise
                _advance(bar, units)  # the last reports may still be on their way
                self.placements = [node for _, node in placed]
                return [result for result, _ in placed]
        finally:
            # Interrupted or failed: no job keeps running unwatched. Cancelled jobs lose
            # nothing; each resumes from its last committed stage on the next run. Forced:
            # a polite cancel is a SIGINT to the worker, which a worker ignores when the
            # driver was started with SIGINT ignored (a background job of a shell script).
            for ref in pending:
                ray.cancel(ref, force=True)
            with contextlib.suppress(Exception):
                ray.kill(counter)


def _take(counter: Any) -> int:
    """Units reported since the last call; 0 if the counter cannot answer (display only)."""
    import ray

    try:
        return int(ray.get(counter.take.remote(), timeout=5))
    except Exception:  # a lost progress actor must never fail the jobs it counts
        return 0


def require_a_node_that_fits(
    num_cpus: float, num_gpus: float, names: tuple[str, str] = ("resources", "shard task")
) -> None:
    """Raise if no alive node of the connected cluster has the CPUs and GPUs one task asks
    for; ``names``: the config section that sets them, and what the task is."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= num_cpus and n.get("GPU", 0) >= num_gpus for n in nodes):
        return
    largest = (
        ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes)
        or "none alive"
    )
    section, task = names
    raise RuntimeError(
        f"no node of the Ray cluster can run a {task}: it asks for "
        f"{section}.num_cpus = {num_cpus:g} and {section}.num_gpus = "
        f"{num_gpus:g}, and the nodes have {largest}. Lower those settings, or "
        "join a cluster that has them (RayExecutor(check_resources=False) for a cluster "
        "that adds nodes on demand)"
    )


@functools.cache
def _progress_counter_class() -> Any:
    """An actor that sums the units tasks report (reserving no CPU)."""
    import ray

    @ray.remote(num_cpus=0)
    class ProgressCounter:
        def __init__(self) -> None:
            self.units = 0

        def add(self, units: int) -> None:
            self.units += units

        def take(self) -> int:
            units, self.units = self.units, 0
            return units

    return ProgressCounter


def _run_reporting(fn: Callable[[Any, Progress], Any], job: Any, counter: Any) -> tuple[Any, str]:
    """The job's result and the ID of the node that ran it."""
    import ray

    # Fire and forget: waiting for the actor would be a ray.get inside the task, during
    # which Ray lends the task's CPU to the next task, on a fresh worker that pays the
    # trainer's start-up again; more jobs would then run at once than there are CPUs.
    result = fn(job, lambda units: counter.add.remote(units))
    return result, ray.get_runtime_context().get_node_id()


def make_executor(kind: str, address: str | None = None, progress: bool = True) -> Any:
    """Executor by name: ``local`` (in process) or ``ray``."""
    if kind == "local":
        if address:
            raise ValueError("--ray-address only applies with --executor ray")
        return InProcessExecutor(progress=progress)
    if kind == "ray":
        return RayExecutor(address, progress=progress)
    raise ValueError(f"unknown executor {kind!r}; use 'local' or 'ray'")

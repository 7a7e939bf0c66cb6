"""Dask worker preload for the GPU check: records where each sweep task ran.

Loaded into every dask worker of the end-to-end run through the environment
(``DASK_DISTRIBUTED__WORKER__PRELOAD``); appends one JSON line per finished ``evaluate_task``
to ``$KTSWEEP_GPU_PROBE/<pid>.jsonl``: the worker's name and resources, its
CUDA_VISIBLE_DEVICES, the methods the task computed (its result's keys) and what the
worker's torch saw of CUDA. The sweep code is not changed; the check reads these lines to
tell whether the Monte Carlo tasks ran on the GPU worker.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


def cuda_state() -> dict[str, Any]:
    """What this process's torch knows of CUDA (without importing torch when unused)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"torch_loaded": False}
    state: dict[str, Any] = {"torch_loaded": True, "cuda_available": torch.cuda.is_available(),
                             "cuda_initialized": torch.cuda.is_initialized()}
    if state["cuda_initialized"]:
        state["device_name"] = torch.cuda.get_device_name()
        state["max_memory_allocated"] = int(torch.cuda.max_memory_allocated())
    return state


class TaskProbe(WorkerPlugin):
    """Appends a record when a sweep task's result lands in worker memory."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{os.getpid()}.jsonl"
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "memory" or not str(key).startswith("evaluate_task"):
            return
        value = self.worker.data.get(key)
        record = {
            "key": str(key),
            "worker": str(self.worker.name),
            "resources": dict(self.worker.state.total_resources),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "methods": sorted(value) if isinstance(value, dict) else None,
            **cuda_state(),
        }
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


async def dask_setup(worker: Any) -> None:
    folder = Path(os.environ["KTSWEEP_GPU_PROBE"])
    folder.mkdir(parents=True, exist_ok=True)
    await worker.plugin_add(TaskProbe(folder), name="ktsweep-gpu-probe")

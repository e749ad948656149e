"""Run pure batch tasks on any executor, in order, with bounded memory and a progress bar."""

from polgen.engine.batches import plan_batches, rows_per_batch
from polgen.engine.executor import check_executor, resolve_executor, run_tasks, run_to_sink
from polgen.engine.progress import progress_bar, progress_enabled

__all__ = [
    "run_tasks",
    "run_to_sink",
    "resolve_executor",
    "check_executor",
    "plan_batches",
    "rows_per_batch",
    "progress_bar",
    "progress_enabled",
]

"""Training callbacks: throughput and MFU, the model summary, a compact progress bar, the run's
checkpoints (its final state included) and the room for them, stopping at a step boundary on
Ctrl-C or SIGTERM, and removing the log directory of a run that failed before its first step."""

from motlab.callbacks.checkpoint_space import CheckpointSpace
from motlab.callbacks.empty_run import RemoveEmptyRun, new_log_directories
from motlab.callbacks.progress import ProgressBar
from motlab.callbacks.run_checkpoint import RunCheckpoint
from motlab.callbacks.speed import PEAK_FLOPS_BF16, SpeedMonitor, peak_flops_per_device
from motlab.callbacks.stop import STOP_SIGNALS, StopOnSignal, StopResult
from motlab.callbacks.summary import RunSummary

__all__ = [
    "CheckpointSpace",
    "PEAK_FLOPS_BF16",
    "ProgressBar",
    "RemoveEmptyRun",
    "RunCheckpoint",
    "RunSummary",
    "STOP_SIGNALS",
    "SpeedMonitor",
    "StopOnSignal",
    "StopResult",
    "new_log_directories",
    "peak_flops_per_device",
]

"""Training callbacks: throughput and MFU, the model summary, a compact progress bar, the run's
checkpoints (its final state included), and stopping at a step boundary on Ctrl-C or SIGTERM."""

from motlab.callbacks.progress import ProgressBar
from motlab.callbacks.run_checkpoint import RunCheckpoint
from motlab.callbacks.speed import PEAK_FLOPS_BF16, SpeedMonitor, peak_flops_per_device
from motlab.callbacks.stop import STOP_SIGNALS, StopOnSignal, StopResult
from motlab.callbacks.summary import RunSummary

__all__ = [
    "PEAK_FLOPS_BF16",
    "ProgressBar",
    "RunCheckpoint",
    "RunSummary",
    "STOP_SIGNALS",
    "SpeedMonitor",
    "StopOnSignal",
    "StopResult",
    "peak_flops_per_device",
]

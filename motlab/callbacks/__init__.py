"""Training callbacks: throughput and MFU, the model summary, a compact progress bar, and the
run's checkpoints (final state included, and on Ctrl-C or SIGTERM)."""

from motlab.callbacks.progress import ProgressBar
from motlab.callbacks.run_checkpoint import RunCheckpoint
from motlab.callbacks.speed import PEAK_FLOPS_BF16, SpeedMonitor, peak_flops_per_device
from motlab.callbacks.summary import RunSummary

__all__ = [
    "PEAK_FLOPS_BF16",
    "ProgressBar",
    "RunCheckpoint",
    "RunSummary",
    "SpeedMonitor",
    "peak_flops_per_device",
]

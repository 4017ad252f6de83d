"""Data pipeline: C4 (hub, local copy or globs) -> tokenized, packed, resumable batches.

``from motlab.data import C4DataModule`` is the entry point; the submodules each do one job:
``sources`` (files and the hub), ``remote`` (hub files over HTTP through network faults),
``tokenizer``, ``sharding`` (who reads what), ``shuffle``, ``packing`` (windows), ``stream``
(the resumable dataset), ``loader`` (checkpoint-exact loader) and ``module`` (the
LightningDataModule).
"""

from motlab.data.module import C4DataModule
from motlab.data.stream import MalformedRecordWarning, PackedStream
from motlab.hub import HubUnreachableError

__all__ = ["C4DataModule", "HubUnreachableError", "MalformedRecordWarning", "PackedStream"]

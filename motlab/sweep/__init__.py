"""Sweeps: many ``motlab fit`` runs from one file, checked up front, launched, resumed, reported.

* :mod:`.spec` — the sweep file (``conf/sweeps/*.yaml``): base configs, axes (zipped keys),
  baselines; its expansion into named runs and their exact ``motlab fit`` commands;
* :mod:`.check` — every run's merged config checked with motlab's own parser and classes;
* :mod:`.state` — finished / resumable / new, from the run's ``last.ckpt``;
* :mod:`.local`, :mod:`.slurm` — the launchers (one process per run; a submitit job array);
* :mod:`.report`, :mod:`.figure` — the table of a sweep's results, and its figure;
* :mod:`.command` — ``motlab sweep``, and writing the report out (table, CSV, figure).
"""

from motlab.sweep.command import build_parser, main
from motlab.sweep.spec import Axis, Sweep, SweepError, SweepRun, load_sweep

__all__ = ["Axis", "Sweep", "SweepError", "SweepRun", "build_parser", "load_sweep", "main"]

"""Analysis helpers for notebooks and ``motlab compare``: runs, speed-ups, routing.

* :mod:`~motlab.analysis.runs` — TensorBoard runs (a run's event files merged, its resumes
  included; other runs in sibling ``version_N`` directories left out and named) into arrays
  and tables;
* :mod:`~motlab.analysis.speedup` — steps/tokens/wall-clock to a target loss and the paper's
  speed-up metric, with linear interpolation between logged points;
* :mod:`~motlab.analysis.routing` — what each routed layer reports of its routing on one batch
  (MoT merge weights and entropies, token-choice load and drops; forward hooks, no copy of the
  layer maths);
* :mod:`~motlab.analysis.plots` — matplotlib figures of the above (imported on demand, as
  matplotlib is optional).
"""

from motlab.analysis.routing import (
    LayerRouting,
    entropy_matrix,
    inspect_routing,
    load_matrix,
    report_matrix,
)
from motlab.analysis.runs import (
    Run,
    Series,
    event_files,
    find_runs,
    format_table,
    read_run,
    scalars_table,
    to_frame,
)
from motlab.analysis.speedup import (
    SpeedUp,
    ToTarget,
    at_crossing,
    compare_runs,
    speedup,
    to_target,
)

__all__ = [
    "LayerRouting",
    "Run",
    "Series",
    "SpeedUp",
    "ToTarget",
    "at_crossing",
    "compare_runs",
    "entropy_matrix",
    "event_files",
    "find_runs",
    "format_table",
    "inspect_routing",
    "load_matrix",
    "read_run",
    "report_matrix",
    "scalars_table",
    "speedup",
    "to_frame",
    "to_target",
]

"""Check every run of a sweep before the first one starts, with motlab's own machinery.

Each run's arguments are parsed by the ``motlab fit`` parser itself (:func:`motlab.cli.fit_parser`:
config merging, unknown keys, value types, interpolation, argument links), and its model is
built from the parsed config by :class:`~motlab.lit.LitLM` on PyTorch's ``meta`` device — every
check of :class:`~motlab.config.GPTConfig`, the feed-forward layers and the transition runs, and
no memory is allocated, so a medium model with 1024 experts costs a fraction of a second — then
:meth:`LitLM.check_batch_size` sees the run's per-device batch. Nothing reads data, probes the
hub or seeds the global RNG.

``model.net.ffn`` is a free-form mapping to the parser (the variant picks its dataclass later);
:func:`motlab.layers.ffn_config` checks its keys and value types, as in every ``motlab fit``.
What a sweep needs beyond a single run is checked here: a TensorBoard logger to read back, its
own checkpoint directory per run, a step budget to tell a finished run by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser, Namespace

from motlab.rundir import experiment_root
from motlab.sweep.spec import SweepError, SweepRun


@dataclass
class CheckedRun:
    """A run whose config parsed and whose model and batch fit together."""

    run: SweepRun
    max_steps: int
    """``trainer.max_steps``: a run whose ``last.ckpt`` reached it is finished."""
    devices: Any
    num_nodes: int
    experiment: Path
    """The run's experiment directory (:func:`motlab.rundir.experiment_root`): its versions,
    and the ``last.ckpt`` that ``--ckpt_path last`` resumes."""


@cache
def _fit_parser() -> ArgumentParser:
    """The ``motlab fit`` parser, built once (a fraction of a second) for all runs."""
    from motlab.cli import fit_parser

    return fit_parser()


def parse_run(run: SweepRun) -> Namespace:
    """``run``'s merged config, as ``motlab fit`` would parse it (raises on unknown keys, types)."""
    return _fit_parser().parse_args(run.fit_args()[1:])


def check_run(run: SweepRun) -> CheckedRun:
    """Parse ``run``'s arguments and build its model on the meta device; raise on a problem."""
    from motlab.lit import LitLM

    config = parse_run(run)
    model = config.model.as_dict()
    with torch.device("meta"):  # GPTConfig checks model.net.ffn: variant, keys, value types
        lit = LitLM(**model)
    lit.check_batch_size(config.data.batch_size)

    logger = config.trainer.get("logger")
    class_path = logger.get("class_path", "") if isinstance(logger, Namespace) else ""
    if not class_path.endswith("TensorBoardLogger"):
        raise SweepError(
            f"trainer.logger is {class_path or logger!r}: a sweep reads its runs back from "
            "TensorBoard logs; use lightning.pytorch.loggers.TensorBoardLogger (as conf/*.yaml do)"
        )
    if config.checkpoint.get("dirpath"):
        raise SweepError(
            f"checkpoint.dirpath={config.checkpoint.dirpath!r} would put every run's checkpoints "
            "in one place: unset it, so that each run checkpoints into its own log directory"
        )
    if not config.checkpoint.get("save_last"):
        raise SweepError("checkpoint.save_last must be true: a run resumes from its last.ckpt")
    max_steps = config.trainer.get("max_steps")
    if not isinstance(max_steps, int) or max_steps <= 0:
        raise SweepError(
            f"trainer.max_steps={max_steps!r}: a sweep run needs a step budget (a run is "
            "finished when its last.ckpt reaches it)"
        )
    experiment = experiment_root(config)
    assert experiment is not None  # a TensorBoardLogger always has a save_dir
    return CheckedRun(
        run=run,
        max_steps=max_steps,
        devices=config.trainer.get("devices"),
        num_nodes=int(config.trainer.get("num_nodes") or 1),
        experiment=experiment,
    )


def check_runs(runs: Sequence[SweepRun]) -> list[CheckedRun]:
    """Check every run; raise one :class:`SweepError` naming each bad run and its problem."""
    checked, problems = [], []
    for run in runs:
        try:
            checked.append(check_run(run))
        except Exception as err:  # noqa: BLE001 - every problem is reported, then raised
            message = str(err).strip() or type(err).__name__
            if not isinstance(err, ValueError):  # ArgumentError, TypeError, ...: say which
                message = f"{type(err).__name__}: {message}"
            problems.append(f"run {run.name}:\n" + _indent(message))
    if problems:
        raise SweepError(
            f"{len(problems)} of {len(runs)} runs are invalid; nothing was started.\n"
            + "\n".join(problems)
        )
    return checked


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

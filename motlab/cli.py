"""The ``motlab`` command: LightningCLI over :class:`LitLM` and :class:`C4DataModule`.

This is where YAML and command-line flags become a run's objects; ``motlab sweep`` checks its
runs with the same parser (:func:`fit_parser`). Top-level keys:

* ``model`` — :class:`~motlab.lit.LitLM`: ``net`` (:class:`~motlab.config.GPTConfig`),
  ``optim`` (:class:`~motlab.optim.OptimConfig`), ``init_from``, ``compile``, ``transition``
  (:class:`~motlab.transition.TransitionConfig`), ``discrete_eval``;
* ``data`` — :class:`~motlab.data.C4DataModule` (``path``, ``tokenizer``, ``batch_size`` per
  device, ``seq_len``, ``num_workers``, ...). ``model.net.vocab_size`` is bound from the
  tokenizer and ``model.net.seq_len`` from ``data.seq_len``: they are not set in YAML;
* ``trainer`` — :class:`lightning.pytorch.Trainer`;
* ``checkpoint`` — :class:`~motlab.callbacks.RunCheckpoint` (a ModelCheckpoint: every N steps +
  ``last.ckpt``); ``speed`` — :class:`~motlab.callbacks.SpeedMonitor` (``peak_flops`` for MFU);
  :class:`~motlab.callbacks.StopOnSignal` (Ctrl-C and SIGTERM stop at a step boundary) is always
  on, and :attr:`MotCLI.exit_status` says how the run ended;
* ``seed_everything``; ``float32_matmul_precision`` (``torch.set_float32_matmul_precision`` on a
  machine with CUDA: ``high`` lets float32 matmuls use TF32 tensor cores — under bf16-mixed those
  are only the routers'); and per subcommand ``ckpt_path``.

Config files given with several ``--config`` are merged in order (later wins); YAML is read with
OmegaConf, so ``${data.seq_len}``-style interpolation works. A mapping value such as
``model.net.ffn`` is replaced as a whole by a later file (write the full ffn there), while a
command-line flag ``--model.net.ffn.group_size 4`` changes a single key.

``--ckpt_path last`` resumes from the newest ``last.ckpt`` of this experiment (in
``checkpoint.dirpath`` if set, else under ``{logger save_dir}/{logger name}/version_*/``) and
keeps logging into that same version directory. Resuming checks that the checkpoint's model
matches the configured one; ``validate``/``test`` with a checkpoint take the model from it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.callbacks import ProgressBar as BaseProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from motlab.callbacks import (
    ProgressBar,
    RunCheckpoint,
    RunSummary,
    SpeedMonitor,
    StopOnSignal,
    StopResult,
)
from motlab.checkpoint import config_to_dict, read_net_config
from motlab.config import GPTConfig
from motlab.lit import LitLM
from motlab.rundir import experiment_root, find_resume_checkpoint, logger_root, resumed_version

PACKAGE_DIR = Path(__file__).resolve().parent

LATE_BOUND_NET_KEYS = ("vocab_size",)
"""``model.net`` keys bound at instantiation (from the tokenizer), absent from the parsed config."""

CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "checkpoint.every_n_train_steps": 5000,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": 3,
    "checkpoint.monitor": "step",
    "checkpoint.mode": "max",
    "checkpoint.filename": "{step:07d}",
}
"""Every 5000 steps, keeping the 3 newest, plus ``last.ckpt``."""


def _data_module_class() -> type:
    from motlab.data import C4DataModule

    return C4DataModule


class SaveRunConfig(SaveConfigCallback):
    """Write the run's ``config.yaml`` into its log directory, and nowhere without a logger.

    (Lightning's callback falls back to the working directory when logging is off.)
    """

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if trainer.loggers:
            super().setup(trainer, pl_module, stage)


def quiet_library_noise() -> None:
    """Hide what library internals print on every run that is not the user's business.

    Each by its exact message: torchdata's own call of a deprecated torch function, a torch
    deprecation that Lightning's internals trigger, and Lightning's advertisement for its cloud
    logger. Nothing else is filtered; motlab's own warnings and Lightning's about the user's
    configuration still show.
    """
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
    leafspec = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
    warnings.filterwarnings("ignore", message=leafspec, category=FutureWarning)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoCloudLoggerTip) for f in logger.filters):
        logger.addFilter(_NoCloudLoggerTip())


class _NoCloudLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg).lower()


class MotCLI(LightningCLI):
    """LightningCLI with motlab's defaults, argument links, and resume checks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        quiet_library_noise()
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        self.argv: list[str] | None = list(argv) if isinstance(argv, (list, tuple)) else None
        """The command line (for the resume command printed when a run is stopped)."""
        self.stop: StopOnSignal | None = None
        """The trainer's Ctrl-C/SIGTERM handling, added by :meth:`instantiate_trainer`."""
        if not args:
            kwargs.setdefault("model_class", LitLM)
            kwargs.setdefault("datamodule_class", _data_module_class())
        kwargs.setdefault("auto_configure_optimizers", False)  # LitLM owns its optimiser recipe
        # No abbreviated flags: ``--trainer.max_step`` must not silently mean max_steps.
        modes = {"parser_mode": "omegaconf", "allow_abbrev": False}
        parser_kwargs = {"prog": "motlab", **modes}
        parser_kwargs.update({cmd: dict(modes) for cmd in self.subcommands()})
        for key, value in (kwargs.pop("parser_kwargs", None) or {}).items():
            if isinstance(value, dict):
                parser_kwargs[key] = {**parser_kwargs.get(key, {}), **value}
            else:
                parser_kwargs[key] = value
        kwargs["parser_kwargs"] = parser_kwargs
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        trainer_defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        extra = trainer_defaults.get("callbacks") or []
        extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
        trainer_defaults["callbacks"] = [LearningRateMonitor(logging_interval="step"), *extra]
        kwargs["trainer_defaults"] = trainer_defaults
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate, test (no ``predict``: it would return (B, T, V) logits)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(SpeedMonitor, "speed")
        parser.add_argument(
            "--float32_matmul_precision",
            type=Literal["highest", "high", "medium"],
            default="highest",
            help=(
                "torch.set_float32_matmul_precision on a machine with CUDA. 'high': float32 "
                "matmuls may use TF32 tensor cores; under bf16-mixed those are only the "
                "routers', which run in float32 for precise routing"
            ),
        )
        parser.link_arguments("data.seq_len", "model.net.seq_len", apply_on="parse")
        parser.link_arguments("data.vocab_size", "model.net.vocab_size", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with :class:`ProgressBar` unless the bar is off or one is configured,
        motlab's :class:`RunSummary` in place of Lightning's model summary, and
        :class:`StopOnSignal` (told this command line, for the resume command it prints)."""
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        config = init.get("trainer") or {}
        if "callbacks" not in kwargs:
            callbacks = config.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
            if config.get("enable_progress_bar") is not False and not any(
                isinstance(cb, BaseProgressBar) for cb in callbacks
            ):
                callbacks.append(ProgressBar())
            if config.get("enable_model_summary") is not False:
                callbacks.append(RunSummary())
                kwargs["enable_model_summary"] = False  # its table would print "FLOPs 0"
            command = None if self.argv is None else ["motlab", *_without_ckpt_path(self.argv)]
            self.stop = next((cb for cb in callbacks if isinstance(cb, StopOnSignal)), None)
            if self.stop is None:
                self.stop = StopOnSignal(command)
                callbacks.append(self.stop)
            kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        if not trainer.loggers:  # --trainer.logger false: nothing to monitor the LR into
            trainer.callbacks = [
                cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)
            ]
        return trainer

    def before_instantiate_classes(self) -> None:
        """Set the float32 matmul precision; let the data module fail in seconds (an
        unreachable hub) before the model is built."""
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        precision = config.get("float32_matmul_precision")
        if precision and torch.cuda.is_available():
            # The global setter, not the per-backend one: Lightning reads it back on CUDA.
            torch.set_float32_matmul_precision(precision)
        data = config.get("data")
        if data is not None and issubclass(self.datamodule_class, _data_module_class()):
            self.datamodule_class.check_config(data)
        model = config.get("model")
        if model is not None and model.get("init_from") == "last":
            # This experiment's newest last.ckpt, as for --ckpt_path last.
            model.init_from = str(_experiment_last_checkpoint(config, "--model.init_from last"))
            rank_zero_info(f"--model.init_from last: {model.init_from}")

    def after_instantiate_classes(self) -> None:
        if self.subcommand is not None and self.datamodule is not None:
            self.model.check_batch_size(getattr(self.datamodule, "batch_size", None))

    @property
    def stop_result(self) -> StopResult | None:
        """How the run ended when Ctrl-C or SIGTERM stopped it (signal, step, checkpoint and the
        command that resumes it); None when no signal stopped it."""
        return self.stop.result if self.stop is not None else None

    @property
    def exit_status(self) -> int:
        """What ``motlab`` exits with: 0, or 130 / 143 for a run stopped by Ctrl-C / SIGTERM."""
        result = self.stop_result
        return result.exit_status if result is not None else 0

    # ------------------------------------------------------------------------- --ckpt_path

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last``; keep (fit) or adopt (validate/test) the model config.

        Overrides a private LightningCLI method (``tests/test_lightning_contract.py`` fails if
        Lightning renames it): Lightning's version silently overwrites the configured model with the
        checkpoint's hyper-parameters, so a resumed run would train another variant than the
        one configured without a word. Here ``fit`` keeps the configured model, and
        ``LitLM.on_load_checkpoint`` refuses a checkpoint that does not fit it; ``validate`` and
        ``test`` evaluate the checkpoint's own model.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or ckpt_path in ("best", "hpc", "registry"):
            return
        if ckpt_path == "last":
            ckpt_path = str(_experiment_last_checkpoint(config, "--ckpt_path last"))
            config.ckpt_path = ckpt_path
            rank_zero_info(f"--ckpt_path last: {ckpt_path}")
        path = Path(ckpt_path)
        if not path.exists():
            raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint")
        if not path.is_file():
            return  # a sharded (distributed) checkpoint directory: Lightning loads it
        saved = read_net_config(path, option="--ckpt_path")  # a clear error if not a checkpoint
        if subcommand == "fit":
            _continue_logging_in_version_of(config, path)
        elif saved is not None:
            changed = []
            for key, value in config_to_dict(GPTConfig.from_dict(saved)).items():
                if key in LATE_BOUND_NET_KEYS:
                    continue
                if _namespace_to_dict(config.model.net).get(key) != value:
                    changed.append(key)
                config.model.net[key] = value
            if changed:
                rank_zero_info(f"{subcommand}: model.net {changed} taken from {ckpt_path}")


class _ParserOnly(MotCLI):
    """MotCLI that builds its parser and stops: nothing is parsed, seeded or instantiated."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # LightningCLI seeds the global RNG right after parsing unless seed_everything is False.
        self.config = Namespace(seed_everything=False)

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def fit_parser() -> LightningArgumentParser:
    """The parser ``motlab fit ARGS`` reads ARGS with (without the subcommand level): config
    merging, unknown keys, value types, interpolation and argument links, exactly as ``fit``.

    LightningCLI builds its parser only as the first step of a whole run (parse, seed, build
    the model and data, fit); this builds the parser alone, for checking many runs' arguments
    before any of them starts (``motlab sweep``). Errors raise instead of exiting.
    """
    return _ParserOnly(run=False, parser_kwargs={"exit_on_error": False}).parser


def _experiment_last_checkpoint(config: Namespace, option: str) -> Path:
    """The checkpoint ``--ckpt_path last`` (or ``--model.init_from last``) resumes: the newest
    ``last.ckpt`` of the experiment configured in ``config`` (a subcommand's namespace)."""
    root = experiment_root(config)
    if root is None:
        raise ValueError(f"{option} needs checkpoint.dirpath, or a logger with save_dir and name")
    try:
        return find_resume_checkpoint(root)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{option}: {e}; start without it, or pass the path of a checkpoint"
        ) from e


def _continue_logging_in_version_of(config: Namespace, ckpt: Path) -> None:
    """Log a resumed run into the version directory its checkpoint lives in."""
    version = resumed_version(ckpt, logger_root(config))
    logger = config.trainer.get("logger")
    if version is None or not isinstance(logger, Namespace):
        return
    if logger.init_args.get("version") is None:
        logger.init_args.version = version


def _without_ckpt_path(argv: Sequence[str]) -> list[str]:
    """``argv`` without any ``--ckpt_path X`` / ``--ckpt_path=X``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            out.append(arg)
    return out


def _namespace_to_dict(value: Any) -> Any:
    if isinstance(value, Namespace):
        return value.as_dict()
    return dict(value)


def cli_main(args: Sequence[str] | None = None, **kwargs: Any) -> MotCLI:
    """Run the CLI in-process (``args`` as on the command line); returns the :class:`MotCLI`."""
    return MotCLI(args=list(args) if args is not None else None, **kwargs)


TOOLS = {
    "compare": "motlab.compare",  # motlab compare RUN_DIR... [--target-loss X] [--plot out.png]
    "zeroshot": "motlab.eval.zeroshot",  # motlab zeroshot --checkpoint CKPT --task piqa,...
    "lm_eval": "motlab.eval.harness",  # motlab lm_eval run --model motlab --model_args ...
    "variants": "motlab.variants",  # motlab variants [NAME...]: the ffn variants and their keys
    "sweep": "motlab.sweep",  # motlab sweep conf/sweeps/FILE.yaml [--dry-run] [-- FIT_FLAGS]
    "generate": "motlab.generate_command",  # motlab generate --checkpoint CKPT --prompt TEXT
}
"""Commands beside LightningCLI's fit/validate/test: each module has ``main(argv) -> int``."""


TRACEBACK_ENV = "MOTLAB_TRACEBACK"
"""Set to 1 to see the full traceback of a configuration or input error."""

USER_ERRORS = (ValueError, OSError, KeyError)
"""What motlab raises for bad input: values, files and the hub (``HubUnreachableError`` is a
``ConnectionError``, an ``OSError``)."""


def _motlab_cause(error: BaseException) -> BaseException | None:
    """The exception of one of motlab's own input checks behind ``error``, if there is one: the
    error itself or what it was raised from (jsonargparse wraps errors of the classes it builds),
    whose innermost frame is in the motlab package. The same exception types raised deep inside
    torch or Lightning are bugs or runtime failures whose traceback is the useful part."""
    seen: BaseException | None = error
    while seen is not None:
        tb = seen.__traceback__
        if isinstance(seen, USER_ERRORS) and tb is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            if Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR):
                return seen
        seen = seen.__cause__
    return None


def _error_block(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = str(message).splitlines() or [type(error).__name__]
    body = "\n".join(["error: " + lines[0], *("       " + line for line in lines[1:])])
    return f"{body}\n(set {TRACEBACK_ENV}=1 for the full traceback)"


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ``motlab fit|validate|test|compare|zeroshot|lm_eval|generate ...``.

    motlab's own errors about the configuration, files or the hub print as one ``error:`` block
    and exit with status 2, as argument errors do; ``MOTLAB_TRACEBACK=1`` keeps the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        sys.exit(importlib.import_module(TOOLS[args[0]]).main(args[1:]))
    if args and args[0] in ("-h", "--help"):
        print("motlab analysis commands: " + ", ".join(f"motlab {name} --help" for name in TOOLS))
    try:
        cli = MotCLI(args=None if argv is None else args)
    except USER_ERRORS as error:
        cause = _motlab_cause(error)
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or cause is None:
            raise
        print(_error_block(cause), file=sys.stderr)
        sys.exit(2)
    if cli.exit_status:
        sys.exit(cli.exit_status)


if __name__ == "__main__":
    main()

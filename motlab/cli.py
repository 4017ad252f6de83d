"""The ``motlab`` command: LightningCLI over :class:`LitLM` and :class:`C4DataModule`.

This is the only place where YAML and command-line flags become objects. Top-level keys:

* ``model`` — :class:`~motlab.lit.LitLM`: ``net`` (:class:`~motlab.config.GPTConfig`),
  ``optim`` (:class:`~motlab.optim.OptimConfig`), ``init_from``, ``compile``;
* ``data`` — :class:`~motlab.data.C4DataModule` (``path``, ``tokenizer``, ``batch_size`` per
  device, ``seq_len``, ``num_workers``, ...). ``model.net.vocab_size`` is bound from the
  tokenizer and ``model.net.seq_len`` from ``data.seq_len``: they are not set in YAML;
* ``trainer`` — :class:`lightning.pytorch.Trainer`;
* ``checkpoint`` — :class:`~motlab.callbacks.RunCheckpoint` (a ModelCheckpoint: every N steps +
  ``last.ckpt``); ``speed`` — :class:`~motlab.callbacks.SpeedMonitor` (``peak_flops`` for MFU);
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
import sys
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
from lightning.pytorch.utilities.model_helpers import is_overridden

from motlab.callbacks import ProgressBar, RunCheckpoint, SpeedMonitor
from motlab.checkpoint import config_to_dict, net_config_mismatch
from motlab.config import GPTConfig
from motlab.data.sources import check_hub
from motlab.lit import LitLM
from motlab.transition import convert_config, saved_after_switch

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


class MotCLI(LightningCLI):
    """LightningCLI with motlab's defaults, argument links, and resume checks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
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
        """The Trainer, with :class:`ProgressBar` unless the bar is off or one is configured."""
        config = self._get(self.config_init, "trainer", default={})
        if config.get("enable_progress_bar") is not False and "callbacks" not in kwargs:
            callbacks = config.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
            if not any(isinstance(cb, BaseProgressBar) for cb in callbacks):
                kwargs["callbacks"] = [*callbacks, ProgressBar()]
        trainer = super().instantiate_trainer(**kwargs)
        if not trainer.loggers:  # --trainer.logger false: nothing to monitor the LR into
            trainer.callbacks = [
                cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)
            ]
        return trainer

    def before_instantiate_classes(self) -> None:
        """Set the float32 matmul precision; fail on an unreachable hub in seconds, before the
        model is built."""
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        precision = config.get("float32_matmul_precision")
        if precision and torch.cuda.is_available():
            # The global setter, not the per-backend one: Lightning reads it back on CUDA.
            torch.set_float32_matmul_precision(precision)
        data = config.get("data")
        if data is not None and data.get("path") is None and data.get("train_files") is None:
            check_hub(data.get("hub_dataset", "allenai/c4"), data.get("hub_config", "en"), "train")

    def after_instantiate_classes(self) -> None:
        if self.subcommand is not None and self.datamodule is not None:
            self.model.check_batch_size(getattr(self.datamodule, "batch_size", None))

    def test(self, model: LitLM, datamodule: Any = None, **kwargs: Any) -> Any:
        """``motlab test``; a data module without a test split is tested on its validation data."""
        if datamodule is not None and not is_overridden("test_dataloader", datamodule):
            rank_zero_info("the data module has no test split: testing on its validation data")
            datamodule.test_dataloader = datamodule.val_dataloader
        return self.trainer.test(model, datamodule=datamodule, **kwargs)

    # ------------------------------------------------------------------------- --ckpt_path

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last``; check (fit) or adopt (validate/test) its model config.

        Replaces LightningCLI's version, which silently overwrites the configured model with the
        checkpoint's hyper-parameters — a resumed run would train a different variant than the
        one the user configured, without a word.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or ckpt_path in ("best", "hpc", "registry"):
            return
        if ckpt_path == "last":
            ckpt_path = str(find_last_checkpoint(config))
            config.ckpt_path = ckpt_path
            rank_zero_info(f"--ckpt_path last: {ckpt_path}")
        path = Path(ckpt_path)
        if not path.exists():
            raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint")
        if not path.is_file():
            return  # a sharded (distributed) checkpoint directory: Lightning loads it
        if subcommand == "fit":
            _continue_logging_in_version_of(config, path)
        saved = _saved_net_config(path)
        if saved is None:
            return
        if subcommand == "fit":
            current = _namespace_to_dict(config.model.net)
            current_variant = dict(current.get("ffn") or {}).get("variant", "dense")
            saved_variant = dict(saved.get("ffn") or {}).get("variant", "dense")
            switch_at = config.model.get("switch_to_token_choice_at")
            if saved_after_switch(saved_variant, current_variant, switch_at):
                # Saved after the in-run MoT → token-choice switch: compare with the switched net.
                net = GPTConfig(**{k: v for k, v in current.items() if not k.startswith("_")})
                current = config_to_dict(convert_config(net, config.model.transition_routing))
            message = net_config_mismatch(saved, current, ignore=LATE_BOUND_NET_KEYS)
            if message:
                raise ValueError(f"cannot resume from {ckpt_path}: {message}")
        else:
            changed = []
            for key, value in saved.items():
                if key in LATE_BOUND_NET_KEYS or key.startswith("_"):
                    continue
                if _namespace_to_dict(config.model.net).get(key) != value:
                    changed.append(key)
                config.model.net[key] = value
            if changed:
                rank_zero_info(f"{subcommand}: model.net {changed} taken from {ckpt_path}")


def find_last_checkpoint(config: Namespace) -> Path:
    """The newest ``last.ckpt`` of the experiment configured in ``config`` (a subcommand's)."""
    dirpath = config.get("checkpoint", Namespace()).get("dirpath")
    if dirpath:
        candidates = [Path(dirpath) / "last.ckpt"]
        where = str(dirpath)
    else:
        root = _logger_root(config)
        if root is None:
            raise ValueError(
                "--ckpt_path last needs checkpoint.dirpath, or a logger with save_dir and name"
            )
        candidates = list(root.glob("version_*/checkpoints/last.ckpt"))
        where = str(root / "version_*" / "checkpoints")
    found = [c for c in candidates if c.exists()]
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path last: no last.ckpt in {where}; start without --ckpt_path, or pass the "
            "path of a checkpoint"
        )
    return max(found, key=lambda c: c.stat().st_mtime)


def _logger_root(config: Namespace) -> Path | None:
    """``save_dir/name`` of the configured logger (Lightning's default logger if ``True``)."""
    logger = config.trainer.get("logger")
    default_root = Path(config.trainer.get("default_root_dir") or ".")
    if logger is True or logger is None:
        return default_root / "lightning_logs"
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    if not isinstance(logger, Namespace):
        return None
    init = logger.get("init_args", Namespace())
    save_dir = init.get("save_dir")
    if save_dir is None:
        return None
    name = init.get("name")
    return Path(save_dir) / (name or "")


def _continue_logging_in_version_of(config: Namespace, ckpt: Path) -> None:
    """Log a resumed run into the version directory its checkpoint lives in."""
    version_dir = ckpt.parent.parent
    if ckpt.parent.name != "checkpoints" or not version_dir.name.startswith("version_"):
        return
    logger = config.trainer.get("logger")
    root = _logger_root(config)
    if not isinstance(logger, Namespace) or root is None:
        return
    if root.resolve() != version_dir.parent.resolve():
        return
    if logger.init_args.get("version") is None:
        logger.init_args.version = version_dir.name


def _saved_net_config(path: Path) -> dict[str, Any] | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an older pickle; fall back to a full load
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = ckpt.get("net_config") or ckpt.get("hyper_parameters", {}).get("net")
    return dict(net) if net is not None else None


def _namespace_to_dict(value: Any) -> Any:
    if isinstance(value, Namespace):
        return value.as_dict()
    return dict(value)


def cli_main(args: Sequence[str] | None = None, **kwargs: Any) -> MotCLI:
    """Run the CLI in-process (``args`` as on the command line); returns the :class:`MotCLI`."""
    return MotCLI(args=list(args) if args is not None else None, **kwargs)


TOOLS = {
    "compare": "motlab.compare",  # motlab compare RUN_DIR... [--target-loss X] [--plot out.png]
    "zeroshot": "motlab.zeroshot",  # motlab zeroshot --checkpoint CKPT --task piqa|...
    "sweep": "motlab.sweep",  # motlab sweep conf/sweeps/FILE.yaml [--dry-run] [-- FIT_FLAGS]
}
"""Commands beside LightningCLI's fit/validate/test: each module has ``main(argv) -> int``."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ``motlab fit|validate|test|compare|zeroshot ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        sys.exit(importlib.import_module(TOOLS[args[0]]).main(args[1:]))
    if args and args[0] in ("-h", "--help"):
        print("motlab analysis commands: " + ", ".join(f"motlab {name} --help" for name in TOOLS))
    MotCLI(args=None if argv is None else args)


if __name__ == "__main__":
    main()

"""The LightningModule: next-token cross-entropy + the routed layers' auxiliary losses.

Shapes (legend in :mod:`motlab.shapes`): B, T, U, V.

A batch is a LongTensor (B, T + 1) from the data module: inputs ``[:, :-1]``, targets
``[:, 1:]``. The objective is ``CE + aux.total_loss()`` (load balancing, z-loss: already
weighted by their layers); ``train/loss`` logs the CE alone so variants compare on one scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from motlab import metrics
from motlab.calibration import calibrate_routers
from motlab.checkpoint import (
    check_weights_fit,
    config_to_dict,
    hyperparameters_of,
    net_config_mismatch,
    net_config_of,
    read_saved_net,
    store_net_config,
)
from motlab.clock import StepClock
from motlab.config import GPTConfig
from motlab.layers import Aux, check_group_multiple
from motlab.model import GPT
from motlab.modes import available_modes, evaluating_in, routing_mode
from motlab.optim import OptimConfig, build_optimizer
from motlab.transition import (
    TransitionConfig,
    check_switch,
    init_state,
    prepare_for_resume,
    switch_due,
    switch_in_place,
)

DISCRETE = "discrete"
"""The evaluation mode ``model.discrete_eval`` validates in (MoT: argmax routing)."""


class LitLM(pl.LightningModule):
    """Train a :class:`~motlab.model.GPT` language model.

    Args:
        net: The model (``size``, ``ffn: {variant: ..., ...}``, ``moe_blocks``, ...).
            ``vocab_size`` and ``seq_len`` are bound from the data module by the CLI.
        optim: AdamW and the warm-up + cosine schedule.
        init_from: A checkpoint (``motlab fit``'s ``.ckpt`` or a ``save_model`` file) whose
            weights initialise the model before training; a directory (an experiment such as
            ``runs/mot``) means its newest ``last.ckpt``, and on the command line ``last`` this
            experiment's. Ignored when resuming with ``--ckpt_path`` (the resumed checkpoint's
            weights win). A MoT checkpoint given to a token-choice model is converted
            (transition tuning, stage 2).
        compile: ``torch.compile`` the model's forward pass together with the loss.
        transition: The in-run MoT → token-choice switch (``switch_at`` and the token-choice
            routing), off unless ``switch_at`` is set; and the router calibration at a
            conversion, in-run or by ``init_from``.
        discrete_eval: Also validate in the routed layers' ``discrete`` evaluation mode, where
            they declare one (MoT: argmax routing, the τ → 0 diagnostic), logged as
            ``val/{variant}_discrete/loss`` (``val/mot_discrete/loss``).
    """

    def __init__(
        self,
        net: GPTConfig,
        optim: OptimConfig | None = None,
        init_from: str | None = None,
        compile: bool = False,
        transition: TransitionConfig | None = None,
        discrete_eval: bool = False,
    ) -> None:
        super().__init__()
        net = net if isinstance(net, GPTConfig) else GPTConfig.from_dict(net)  # hyper-parameters
        optim = _as(OptimConfig, optim)
        transition = _as(TransitionConfig, transition)
        # Plain dicts, so that checkpoints load without motlab's classes (motlab.load_model reads
        # hyper_parameters["net"]) and hparams.yaml stays readable.
        self.save_hyperparameters(
            {
                "net": config_to_dict(net),
                "optim": dataclasses.asdict(optim),
                "init_from": init_from,
                "compile": compile,
                "transition": dataclasses.asdict(transition),
                "discrete_eval": discrete_eval,
            }
        )
        check_switch(net, transition)
        self.net = GPT(net)
        self.optim_config = optim
        self.init_from = init_from
        self.transition = transition
        self.discrete_eval = discrete_eval
        # The one loss function the steps call: compiled with the model under model.compile.
        # After the in-run switch the compiled function recompiles by itself (its guards on the
        # swapped modules fail), so it is never rebuilt by hand.
        self.loss_fn = torch.compile(self._cross_entropy) if compile else self._cross_entropy
        self._initialised_from: str | None = None
        self._calibration_due = False  # model.init_from converted a MoT: calibrate on batch 1
        self.val_loss = TokenMean()
        self.val_discrete_loss = TokenMean()
        self.test_loss = TokenMean()
        self._cut_warned: set[str] = set()

    # ----------------------------------------------------------------------------------- setup

    def check_batch_size(self, batch_size: int | None) -> None:
        """Raise if the per-device batch cannot be cut into whole MoT / expert-choice groups."""
        if batch_size is not None:
            cfg = self.net.cfg
            check_group_multiple(batch_size, cfg.group_size, cfg.ffn.variant, "data.batch_size")

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        self.check_batch_size(batch_size)
        keep_whole_groups = getattr(datamodule, "keep_whole_groups", None)
        if callable(keep_whole_groups):  # C4DataModule: reads its validation set now
            keep_whole_groups(self.net.cfg.group_size)
        if stage == "fit" and "bf16" in str(self.trainer.precision):
            if self.trainer.strategy.root_device.type == "cpu":
                rank_zero_warn(
                    f"trainer.precision={self.trainer.precision} on the CPU: most CPUs have no "
                    "fast bf16 arithmetic, so this usually runs slower than float32, not faster. "
                    "Use --trainer.precision 32-true on the CPU (conf/tiny.yaml does), unless "
                    "bf16's numerics are what you are testing."
                )
        if stage == "fit":
            self._check_switch_comes(self.trainer.max_steps)
        if stage == "fit" and batch_size is not None:
            trainer = self.trainer
            total = batch_size * trainer.world_size * trainer.accumulate_grad_batches
            rank_zero_info(
                f"global batch: {total} sequences per optimiser step = data.batch_size "
                f"{batch_size} × {trainer.world_size} devices × "
                f"{trainer.accumulate_grad_batches} accumulated (the paper: 256)"
            )
        if self.init_from and self.trainer.ckpt_path is None and self._initialised_from is None:
            self.init_weights_from(self.init_from)
            self._initialised_from = self.init_from

    def _check_switch_comes(self, max_steps: int) -> None:
        """Refuse an in-run switch the run would end before: it would train MoT alone and
        finish as if it had switched (``conf/mot_switch.yaml``'s 150K under ``tiny.yaml``'s 20
        steps)."""
        at = self.transition.switch_at
        if at is None or max_steps is None or max_steps < 0 or routing_mode(self.net) != "mot":
            return
        if at >= max_steps:
            raise ValueError(
                f"model.transition.switch_at={at} is not before trainer.max_steps={max_steps}: "
                "the run would end before switching to token choice; set switch_at below "
                f"max_steps (e.g. --model.transition.switch_at {max_steps // 2})"
            )

    def init_weights_from(self, path: str) -> None:
        """Copy the net weights of the checkpoint at ``path`` into ``self.net`` (strict); a MoT
        checkpoint for a token-choice model is converted (:func:`motlab.transition.init_state`).
        """
        saved = read_saved_net(path, option="model.init_from")
        state = init_state(self.net.cfg, saved)
        check_weights_fit(saved, state, self.net)
        self.net.load_state_dict(state, strict=True)
        converted = state is not saved.state
        self._calibration_due = converted and self.transition.calibration != "none"
        note = " (MoT weights converted to token choice)" if converted else ""
        rank_zero_info(f"model.init_from: weights of {saved.describe()}{note}")

    def configure_optimizers(self) -> dict[str, Any]:
        total = self.optim_config.total_steps
        if total is None:
            total = self.trainer.max_steps
            if total is None or total < 0:
                raise ValueError(
                    "the learning-rate schedule needs a length: set trainer.max_steps or "
                    "model.optim.total_steps"
                )
        if total < self.optim_config.warmup_steps:
            rank_zero_warn(
                f"the schedule is {total} steps long, shorter than model.optim.warmup_steps="
                f"{self.optim_config.warmup_steps}: the learning rate never reaches its peak"
            )
        optimizer, scheduler = build_optimizer(self.net, self.optim_config, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": metrics.LR},
        }

    # ------------------------------------------------------------------------------- the steps

    def forward(self, tokens_BT: Tensor) -> Tensor:
        return self.net(tokens_BT)

    def _cross_entropy(self, batch: Tensor) -> tuple[Tensor, Aux]:
        """Next-token cross-entropy (fp32) of the net on a (B, T + 1) batch, and its Aux."""
        inputs_BT, targets_BT = batch[:, :-1], batch[:, 1:]
        logits_BTV, aux = self.net.forward_with_aux(inputs_BT)
        # fp32 loss also under bf16-true (autocast does the same for bf16-mixed).
        ce = F.cross_entropy(logits_BTV.flatten(0, 1).float(), targets_BT.flatten())
        return ce, aux

    def _whole_groups(self, batch: Tensor, split: str) -> Tensor:
        """``batch`` cut to whole groups of the routed layers' group size G (MoT, expert choice).

        The data module's loaders only make such batches (:meth:`C4DataModule.keep_whole_groups`
        cuts a short validation set before the first step); any other loader's last, partial
        batch is cut here, once said in a warning, rather than failing in the layer after the
        training before it. A training batch of fewer than G rows cannot be cut: an error.
        """
        G, rows = self.net.cfg.group_size, batch.shape[0]
        keep = rows // G * G
        if keep == rows:
            return batch
        if keep == 0 and split == "train":
            check_group_multiple(rows, G, self.net.cfg.ffn.variant)
        if split not in self._cut_warned:
            self._cut_warned.add(split)
            rank_zero_warn(
                f"a {split} batch of {rows} rows is not a multiple of model.net.ffn.group_size="
                f"{G}: {self.net.cfg.ffn.variant} uses its first {keep} rows (whole groups) and "
                f"leaves {rows - keep} out; said once per loader kind. Give the loader a batch "
                "size that is a multiple of the group size and drop its last partial batch "
                "(DataLoader(drop_last=True))."
            )
        return batch[:keep]

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        batch = self._whole_groups(batch, "train")
        ce, aux = self.loss_fn(batch)
        aux_loss = aux.total_loss()
        if self._is_log_step():
            self._log_train(ce, aux_loss, aux)
        return ce + aux_loss

    def _log_train(self, ce: Tensor, aux_loss: Tensor, aux: Aux) -> None:
        """``train/loss`` (CE), ``/ppl``, ``/aux_loss`` and routing statistics, rank-averaged.

        Only at logging steps, the ones Lightning writes: in between, the values would be
        all-reduced for nothing, and Lightning reads logged progress-bar tensors back as Python
        numbers after every batch, each read a wait for the GPU to drain its queue.
        """
        reduce = self.trainer.strategy.reduce  # all-reduces in place: give it copies
        ce_mean = reduce(ce.detach().clone(), reduce_op="mean")
        self.log(metrics.TRAIN_LOSS, ce_mean)  # shown by motlab's ProgressBar at logging steps
        self.log(metrics.TRAIN_PPL, ce_mean.exp())
        if aux.losses:
            self.log(metrics.TRAIN_AUX_LOSS, reduce(aux_loss.detach().clone(), reduce_op="mean"))
        self._log_routing(aux)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """The in-run switch, when due: MoT layers become token choice on the same Parameters;
        then (or on the first batch after ``init_from`` converted a MoT) router calibration."""
        if switch_due(self.net, self.transition, self.global_step):
            switch_in_place(self.net, self.transition.routing())
            rank_zero_info(
                f"after step {self.global_step}: MoT switched to token choice from step "
                f"{self.global_step + 1} on (model.transition.switch_at="
                f"{self.transition.switch_at}); optimiser state kept"
            )
            self._calibration_due = self.transition.calibration != "none"
        if self._calibration_due:
            self._calibration_due = False
            self._calibrate_routers(batch)

    def _calibrate_routers(self, batch: Tensor) -> None:
        """``model.transition.calibration`` on this training batch, the same on every rank."""
        strategy = self.trainer.strategy
        reports = calibrate_routers(
            self.net,
            batch[:, :-1],
            self.transition.calibration,
            reduce_sum=lambda t: strategy.reduce(t, reduce_op="sum"),
        )
        worst = max(r.fold_error for r in reports)
        rank_zero_info(
            f"step {self.global_step}: token-choice routers of blocks "
            f"{[r.block for r in reports]} calibrated ({self.transition.calibration}) on this "
            f"batch; max |z·w - 1| = {worst:.1e}"
        )

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        batch = self._whole_groups(batch, "validation")
        if batch.shape[0] == 0:
            return
        ce, _ = self.loss_fn(batch)
        self.val_loss.update(ce, batch[:, 1:].numel())
        if self._validates_discrete():
            with evaluating_in(self.net, DISCRETE):  # eager: a diagnostic, not worth a recompile
                ce, _ = self._cross_entropy(batch)
            self.val_discrete_loss.update(ce, batch[:, 1:].numel())

    def on_validation_epoch_end(self) -> None:
        mode = routing_mode(self.net)
        self._log_eval("val", self.val_loss, mode=mode)
        if self._validates_discrete():
            discrete = f"{mode}_{DISCRETE}"
            self._log_eval("val", self.val_discrete_loss, mode=discrete, plain=False)

    def _validates_discrete(self) -> bool:
        """``model.discrete_eval``, and the routed layers declare a ``discrete`` mode that they
        do not run in already."""
        return self.discrete_eval and DISCRETE in available_modes(self.net)

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        batch = self._whole_groups(batch, "test")
        if batch.shape[0] == 0:
            return
        ce, _ = self.loss_fn(batch)
        self.test_loss.update(ce, batch[:, 1:].numel())

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss)

    def _log_eval(
        self, split: str, metric: TokenMean, mode: str | None = None, plain: bool = True
    ) -> None:
        """``{split}/loss`` and ``/ppl``; with ``mode`` also ``{split}/{mode}/loss`` and ``/ppl``
        so curves from before and after a routing switch stay apart."""
        loss = metric.compute()  # token-weighted mean over all batches and ranks
        metric.reset()
        if plain:
            self.log(metrics.eval_loss(split), loss, prog_bar=split == "val", sync_dist=True)
            self.log(metrics.eval_ppl(split), loss.exp(), sync_dist=True)
        if mode is not None and mode != "dense":
            self.log(metrics.eval_loss(split, mode), loss, sync_dist=True)
            self.log(metrics.eval_ppl(split, mode), loss.exp(), sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the global gradient norm, before clipping (Lightning clips after this hook)."""
        if not self._is_log_step():
            return
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if not grads:
            return
        # At least float32 (bf16 gradients), and float64 ones as they are (64-true runs).
        sq = torch.stack(
            [
                torch.linalg.vector_norm(g, dtype=torch.promote_types(g.dtype, torch.float32))
                for g in grads
            ]
        )
        sq = sq.pow(2).sum()
        if _is_sharded(self.trainer.strategy):  # each rank holds a disjoint shard of the grads
            sq = self.trainer.strategy.reduce(sq, reduce_op="sum")
        self.log(metrics.GRAD_NORM, sq.sqrt())

    # ------------------------------------------------------------------------ routing stats

    def _is_log_step(self) -> bool:
        """Whether Lightning will write the metrics logged at this optimiser step."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (a step called by hand)
            return False
        return StepClock(trainer).logging_now()

    def _log_routing(self, aux: Aux) -> None:
        """Per-block routing statistics and weighted aux losses, averaged over ranks.

        Scalars are logged as ``routing/block{i}/{name}``. Per-expert vectors such as
        ``tokens_per_expert`` are summarised (rank-summed first) as ``{name}_cv`` (std / mean),
        ``{name}_max_over_mean`` and ``{name}_min_over_mean`` (1, 1 and 0 = perfectly even).
        """
        values = {**aux.stats, **aux.losses}
        if not values:
            return
        names = sorted(values)
        flat = [values[n].detach().float().reshape(-1) for n in names]
        sizes = [t.numel() for t in flat]
        reduced = self.trainer.strategy.reduce(torch.cat(flat), reduce_op="mean")
        for name, part in zip(names, reduced.split(sizes), strict=True):
            tag = metrics.routing(name)
            if values[name].ndim == 0:
                self.log(tag, part[0])
            else:
                mean = part.mean().clamp_min(1e-12)
                self.log(f"{tag}_cv", part.std(unbiased=False) / mean)
                self.log(f"{tag}_max_over_mean", part.max() / mean)
                self.log(f"{tag}_min_over_mean", part.min() / mean)

    # ---------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        store_net_config(checkpoint, self.net.cfg)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before Lightning loads the weights: redo the in-run switch if the checkpoint was saved
        after it, then refuse a checkpoint of another model."""
        # A resumed run's routers are the checkpoint's (calibrated already where they were); a
        # model.init_from conversion in setup, before this, must not calibrate them again.
        self._calibration_due = False
        saved = net_config_of(checkpoint)
        if saved is not None:
            prepare_for_resume(self.net, self.transition, saved)
            self.check_resume_config(saved)
        saved_optim = hyperparameters_of(checkpoint).get("optim")
        current_optim = dataclasses.asdict(self.optim_config)
        if saved_optim is not None and _normalise(saved_optim) != _normalise(current_optim):
            diff = sorted(k for k in current_optim if saved_optim.get(k) != current_optim[k])
            rank_zero_warn(
                f"model.optim differs from the checkpoint's in {diff}: the optimiser and the "
                "learning-rate schedule are restored from the checkpoint, so these changes "
                "have no effect. Start from the weights alone with model.init_from instead."
            )

    def check_resume_config(self, saved: Mapping[str, Any]) -> None:
        """Raise if the checkpoint's net config differs from this model's."""
        message = net_config_mismatch(saved, config_to_dict(self.net.cfg))
        if message:
            raise ValueError(f"cannot resume: {message}")


class TokenMean(Metric):
    """The mean of per-batch losses weighted by their target tokens, over batches and ranks.

    NaN propagates (a diverged model must not report the mean of its finite batches), and no
    update waits for the device. torchmetrics' ``MeanMetric`` does neither at once: with
    ``nan_strategy="disable"`` (no NaN check, no sync) it replaces the weights by ones
    (torchmetrics 1.9), so a smaller last batch would count as much as a full one.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("weighted", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, loss: Tensor, tokens: int) -> None:
        self.weighted += loss.detach().float() * tokens
        self.tokens += tokens

    def compute(self) -> Tensor:
        return self.weighted / self.tokens


def _as(cls: type, value: Any) -> Any:
    """``value`` as the dataclass ``cls`` (a mapping from saved hyper-parameters, or None)."""
    if value is None:
        return cls()
    return cls(**value) if isinstance(value, Mapping) else value


def _normalise(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def _is_sharded(strategy: Any) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


__all__ = ["LitLM", "OptimConfig"]

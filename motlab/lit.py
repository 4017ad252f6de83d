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
from torchmetrics import MeanMetric

from motlab.checkpoint import config_to_dict, net_config_mismatch, read_checkpoint
from motlab.config import GPTConfig
from motlab.layers import Aux
from motlab.model import GPT
from motlab.optim import OptimConfig, build_optimizer
from motlab.transition import (
    MOT_ONLY_KEYS,
    check_switch,
    convert_config,
    discrete_mot,
    routing_mode,
    saved_after_switch,
    switch_in_place,
)


class LitLM(pl.LightningModule):
    """Train a :class:`~motlab.model.GPT` language model.

    Args:
        net: The model (``size``, ``ffn: {variant: ..., ...}``, ``moe_blocks``, ...).
            ``vocab_size`` and ``seq_len`` are bound from the data module by the CLI.
        optim: AdamW and the warm-up + cosine schedule.
        init_from: A checkpoint (``motlab fit``'s ``.ckpt`` or a ``save_model`` file) whose
            weights initialise the model before training; ignored when resuming with
            ``--ckpt_path`` (the resumed checkpoint's weights win).
        compile: ``torch.compile`` the model's forward pass.
        switch_to_token_choice_at: In-run transition tuning: train MoT until this optimiser
            step, then continue as token choice over the same tensors with the same optimiser
            state and schedule (METHOD.md §5). ``None`` = never.
        transition_routing: Token-choice routing used when a MoT model becomes token choice
            (in-run switch): ``top_k``, ``capacity_factor``, ``load_balancing_weight``,
            ``z_loss_weight``; unset keys take the paper's values (1, 1.25, 0.01, 0).
        discrete_eval: Also validate MoT with argmax routing (the τ → 0 diagnostic), logged as
            ``val/mot_discrete/loss``.
    """

    def __init__(
        self,
        net: GPTConfig,
        optim: OptimConfig | None = None,
        init_from: str | None = None,
        compile: bool = False,
        switch_to_token_choice_at: int | None = None,
        transition_routing: dict[str, Any] | None = None,
        discrete_eval: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(net, Mapping):  # from a checkpoint's hyper-parameters
            net = GPTConfig(**net)
        if optim is None:
            optim = OptimConfig()
        elif isinstance(optim, Mapping):
            optim = OptimConfig(**optim)
        # Plain dicts, so that checkpoints load without motlab's classes (motlab.load_model reads
        # hyper_parameters["net"]) and hparams.yaml stays readable.
        self.save_hyperparameters(
            {
                "net": config_to_dict(net),
                "optim": dataclasses.asdict(optim),
                "init_from": init_from,
                "compile": compile,
                "switch_to_token_choice_at": switch_to_token_choice_at,
                "transition_routing": transition_routing,
                "discrete_eval": discrete_eval,
            }
        )
        if switch_to_token_choice_at is not None and net.ffn.variant != "token_choice":
            check_switch(net, switch_to_token_choice_at, transition_routing)
        self.net = GPT(net)
        self.optim_config = optim
        self.init_from = init_from
        self.compile_model = compile
        self.switch_at = switch_to_token_choice_at
        self.transition_routing = transition_routing
        self.discrete_eval = discrete_eval
        self._loss = self._cross_entropy
        self._initialised_from: str | None = None
        # NaN propagates (a diverged model must not report the mean of its finite batches), and
        # without the NaN check each update is free of a host-device sync.
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.val_discrete_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")

    # ----------------------------------------------------------------------------------- setup

    def check_batch_size(self, batch_size: int | None) -> None:
        """Raise if the per-device batch cannot be cut into whole MoT / expert-choice groups."""
        group = self.net.cfg.group_size
        if batch_size is not None and batch_size % group:
            variant = self.net.cfg.ffn.variant
            raise ValueError(
                f"data.batch_size={batch_size} (per device) is not a multiple of "
                f"model.net.ffn.group_size={group}: {variant} groups the batch into groups of "
                f"{group} examples on every device. Use a per-device batch that is a multiple "
                f"of {group} (e.g. {max(group, batch_size // group * group)}), or change the "
                "group size."
            )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        self.check_batch_size(batch_size)
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
        self._set_loss()

    def _set_loss(self) -> None:
        """Eager or compiled loss of the net as it is now (again after a routing switch).

        The cross-entropy is compiled together with the model: the fp32 cast, log-softmax and
        target pick become fused passes over the (B, T, V) logits instead of an fp32 copy and a
        log-softmax written out in full (at V = 50,257 the largest tensors of the step).
        """
        self._loss = self._cross_entropy
        if self.compile_model:
            self._loss = torch.compile(self._cross_entropy)

    def init_weights_from(self, path: str) -> None:
        """Copy the net weights of the checkpoint at ``path`` into ``self.net`` (strict).

        Kept small so that other initialisations (e.g. MoT → token choice) can override it.
        """
        saved_config, state = read_checkpoint(path)
        if _variant_of(saved_config) == "mot" and self.net.cfg.ffn.variant == "token_choice":
            state = self._converted_state(path, saved_config, state)
        current = self.net.state_dict()
        missing = sorted(set(current) - set(state))
        unexpected = sorted(set(state) - set(current))
        shapes = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
            for k, v in current.items()
            if k in state and state[k].shape != v.shape
        ]
        if missing or unexpected or shapes:
            saved_variant = _variant_of(saved_config)
            ours = _variant_of(config_to_dict(self.net.cfg))
            lines = [
                f"model.init_from={path}: its weights do not fit this model "
                f"(checkpoint variant {saved_variant}, this model {ours})."
            ]
            if missing:
                lines.append(f"  missing in the checkpoint: {_short(missing)}")
            if unexpected:
                lines.append(f"  not in this model: {_short(unexpected)}")
            if shapes:
                lines.append(f"  shape mismatches: {_short(shapes)}")
            raise ValueError("\n".join(lines))
        self.net.load_state_dict(state, strict=True)

    def _converted_state(
        self, path: str, saved_config: Mapping[str, Any], state: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Transition tuning, stage 2: MoT weights into this token-choice model, unchanged.

        The tensors are reused as they are (router → gate, W1/W2 → experts); only the routing
        differs. The configured model must be the MoT model with token-choice routing: same
        sizes, blocks, and expert count and size.
        """
        mot_cfg = GPTConfig(**{k: v for k, v in saved_config.items() if not k.startswith("_")})
        ours = self.net.cfg
        routing = {
            k: getattr(ours.ffn, k)
            for k in ("top_k", "capacity_factor", "load_balancing_weight", "z_loss_weight")
        }
        expected = convert_config(mot_cfg, routing)  # d_expert pinned to the MoT's size
        assert ours.d_ff is not None
        ours = dataclasses.replace(
            ours, ffn=dataclasses.replace(ours.ffn, d_expert=ours.ffn.expert_size(ours.d_ff))
        )
        message = net_config_mismatch(
            config_to_dict(expected), config_to_dict(ours), ignore=("vocab_size", "seq_len")
        )
        if message:
            raise ValueError(
                f"model.init_from={path} is a MoT checkpoint; converting it to token choice "
                f"needs model.net to be the same model with token-choice routing "
                f"(n_experts {expected.ffn.n_experts}, d_expert {expected.ffn.d_expert}): "
                f"{message}"
            )
        rank_zero_info(f"transition tuning: token choice initialised from MoT weights in {path}")
        return {k: v for k, v in state.items() if not k.endswith(MOT_ONLY_KEYS)}

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
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
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

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        ce, aux = self._loss(batch)
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
        self.log("train/loss", ce_mean)  # shown by motlab's ProgressBar, read at logging steps
        self.log("train/ppl", ce_mean.exp())
        if aux.losses:
            self.log("train/aux_loss", reduce(aux_loss.detach().clone(), reduce_op="mean"))
        self._log_routing(aux)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.switch_at is not None and self.global_step >= self.switch_at:
            self.switch_to_token_choice()

    def switch_to_token_choice(self) -> None:
        """The in-run switch: MoT layers become token choice on the same Parameters."""
        if routing_mode(self.net) not in ("mot", "mot_discrete"):
            return
        switch_in_place(self.net, self.transition_routing)
        self._set_loss()
        rank_zero_info(
            f"step {self.global_step}: MoT switched to token choice "
            f"(model.switch_to_token_choice_at={self.switch_at}); optimiser state kept"
        )

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        ce, _ = self._loss(batch)
        self.val_loss.update(ce, weight=batch[:, 1:].numel())
        if self.discrete_eval and routing_mode(self.net) == "mot":
            with discrete_mot(self.net):  # eager: a rare diagnostic, not worth a recompile
                ce, _ = self._cross_entropy(batch)
            self.val_discrete_loss.update(ce, weight=batch[:, 1:].numel())

    def on_validation_epoch_end(self) -> None:
        mode = routing_mode(self.net)
        self._log_eval("val", self.val_loss, mode=mode)
        if self.discrete_eval and mode == "mot":
            self._log_eval("val", self.val_discrete_loss, mode="mot_discrete", plain=False)

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        ce, _ = self._loss(batch)
        self.test_loss.update(ce, weight=batch[:, 1:].numel())

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss)

    def _log_eval(
        self, split: str, metric: MeanMetric, mode: str | None = None, plain: bool = True
    ) -> None:
        """``{split}/loss`` and ``/ppl``; with ``mode`` also ``{split}/{mode}/loss`` and ``/ppl``
        so curves from before and after a routing switch stay apart."""
        loss = metric.compute()  # token-weighted mean over all batches and ranks
        metric.reset()
        if plain:
            self.log(f"{split}/loss", loss, prog_bar=split == "val", sync_dist=True)
            self.log(f"{split}/ppl", loss.exp(), sync_dist=True)
        if mode is not None and mode != "dense":
            self.log(f"{split}/{mode}/loss", loss, sync_dist=True)
            self.log(f"{split}/{mode}/ppl", loss.exp(), sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the global gradient norm, before clipping (Lightning clips after this hook)."""
        if not self._is_log_step():
            return
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if not grads:
            return
        sq = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads])
        sq = sq.pow(2).sum()
        if _is_sharded(self.trainer.strategy):  # each rank holds a disjoint shard of the grads
            sq = self.trainer.strategy.reduce(sq, reduce_op="sum")
        self.log("train/grad_norm", sq.sqrt())

    # ------------------------------------------------------------------------ routing stats

    def _is_log_step(self) -> bool:
        """Whether Lightning will write the metrics logged at this optimiser step."""
        trainer = self._trainer
        if trainer is None or trainer.log_every_n_steps <= 0:
            return False
        return (trainer.global_step + 1) % trainer.log_every_n_steps == 0

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
            tag = f"routing/{name}"
            if values[name].ndim == 0:
                self.log(tag, part[0])
            else:
                mean = part.mean().clamp_min(1e-12)
                self.log(f"{tag}_cv", part.std(unbiased=False) / mean)
                self.log(f"{tag}_max_over_mean", part.max() / mean)
                self.log(f"{tag}_min_over_mean", part.min() / mean)

    # ---------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The net as it is now (it may differ from the hyper-parameters after an in-run switch).
        checkpoint["net_config"] = config_to_dict(self.net.cfg)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("net_config") or checkpoint.get("hyper_parameters", {}).get("net")
        if saved is not None and saved_after_switch(
            _variant_of(saved), routing_mode(self.net), self.switch_at
        ):
            # Saved after the in-run switch: switch first, then Lightning loads the weights.
            switch_in_place(self.net, self.transition_routing)
            self._set_loss()
        if saved is not None:
            self.check_resume_config(saved)
        saved_optim = checkpoint.get("hyper_parameters", {}).get("optim")
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


def _variant_of(config: Mapping[str, Any]) -> str:
    return str(dict(config.get("ffn") or {}).get("variant", "dense"))


def _short(items: list[str], n: int = 5) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


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

"""Training throughput of one motlab config: the real training step, measured.

    python benchmarks/throughput.py --config conf/mot.yaml [--config conf/tiny.yaml] \
        [--steps N] [--warmup N] [--device cpu|cuda] [--compile] [--synthetic] \
        [--loop lightning|bare|plain] [--peak-flops F] [any motlab CLI flag, e.g. --data.path DIR]

Prints one JSON line: variant, tokens_per_s, step_ms, mfu (null without a known peak),
peak_mem_gb, params, active_params, the shapes, and how it was run.

``--loop lightning`` (default) times ``Trainer.fit`` on the LightningModule, optimiser, schedule,
clipping and (without ``--synthetic``) the real streaming data module, all built by the
``motlab`` CLI from the same configs. ``--loop bare`` times a hand-written PyTorch loop over the
same model, optimiser, schedule, clipping and batches, compiling what motlab compiles (model
and loss): the baseline for the framework's cost. ``--loop plain`` is that loop compiling the
model only, the cross-entropy left eager, as hand-written loops usually are. Timing starts after
``--warmup`` optimiser steps (compilation, allocator and loader warm-up) and covers ``--steps``
steps, with the device synchronised at both ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motlab.callbacks import peak_flops_per_device  # noqa: E402
from motlab.cli import cli_main  # noqa: E402
from motlab.lit import LitLM  # noqa: E402
from motlab.optim import build_optimizer  # noqa: E402
from motlab.stats import model_stats  # noqa: E402


class RandomWindows(IterableDataset):
    """Endless uniform-random token windows (B, T + 1): the data path taken out of the timing."""

    def __init__(self, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> None:
        self.batch_size, self.seq_len, self.vocab_size, self.seed = (
            batch_size,
            seq_len,
            vocab_size,
            seed,
        )

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield torch.randint(self.vocab_size, (self.batch_size, self.seq_len + 1), generator=g)


class StepTimer(Callback):
    """Wall time from the end of step ``warmup`` to the end of step ``warmup + steps``."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.steps_timed = 0

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step == self.warmup:
            _sync(trainer.strategy.root_device)
            self.start = time.perf_counter()
        elif step > self.warmup:
            _sync(trainer.strategy.root_device)
            self.end = time.perf_counter()
            self.steps_timed = step - self.warmup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args: argparse.Namespace, extra: list[str], workdir: str) -> Any:
    """Model, data module and trainer exactly as ``motlab fit`` builds them from the configs."""
    cli_args: list[str] = []
    for config in args.config:
        cli_args += ["--config", config]
    overrides = {
        "trainer.max_steps": args.warmup + args.steps,
        "trainer.accelerator": args.device,
        "trainer.devices": 1,
        "trainer.logger.init_args.save_dir": workdir,  # logging stays on: it is part of the cost
        "trainer.enable_progress_bar": "false",
        "trainer.limit_val_batches": 0,
        "trainer.num_sanity_val_steps": 0,
        "checkpoint.dirpath": workdir,
        "checkpoint.save_last": "false",
        "checkpoint.save_top_k": 0,
        "model.compile": str(args.compile).lower(),
    }
    for key, value in overrides.items():
        cli_args += [f"--{key}", str(value)]
    cli_args += extra  # the user's flags win
    return cli_main(cli_args, run=False)


def time_lightning(cli: Any, args: argparse.Namespace) -> float:
    timer = StepTimer(args.warmup)
    cli.trainer.callbacks.append(timer)
    if args.synthetic:
        dm = cli.datamodule
        loader = DataLoader(
            RandomWindows(dm.batch_size, dm.seq_len, dm.vocab_size), batch_size=None
        )
        cli.trainer.fit(cli.model, train_dataloaders=loader)
    else:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert timer.start is not None and timer.end is not None, "too few steps ran"
    return (timer.end - timer.start) / timer.steps_timed


def time_bare(cli: Any, args: argparse.Namespace) -> float:
    """The same step written as a plain PyTorch loop (autocast, clip, AdamW, schedule).

    With ``--compile``, ``--loop bare`` compiles what motlab compiles (model and loss together),
    so its ratio to ``--loop lightning`` is the framework's cost; ``--loop plain`` compiles the
    model only and leaves the cross-entropy eager, as a hand-written loop usually does.
    """
    lit: LitLM = cli.model
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    net = lit.net.to(device)
    precision = str(cli.trainer.precision)
    if precision == "bf16-true":
        net = net.to(torch.bfloat16)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else contextlib.nullcontext()
    )

    if args.loop == "bare":

        def step_loss(batch: torch.Tensor) -> torch.Tensor:
            # motlab's own loss function, eager or compiled as `motlab fit` runs it
            ce, aux = lit.loss_fn(batch)
            return ce + aux.total_loss()

    else:  # plain: the loss written out, only the model compiled
        forward = torch.compile(net.forward_with_aux) if args.compile else net.forward_with_aux

        def step_loss(batch: torch.Tensor) -> torch.Tensor:
            logits, aux = forward(batch[:, :-1])
            ce = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            return ce + aux.total_loss()

    optimizer, scheduler = build_optimizer(net, lit.optim_config, args.warmup + args.steps)
    clip = cli.trainer.gradient_clip_val
    dm = cli.datamodule
    if args.synthetic:
        batches: Any = iter(RandomWindows(dm.batch_size, dm.seq_len, dm.vocab_size))
    else:
        dm.setup("fit")
        batches = iter(dm.train_dataloader())
    start = 0.0
    for step in range(args.warmup + args.steps):
        batch = next(batches).to(device, non_blocking=True)
        with autocast:
            loss = step_loss(batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == args.warmup:
            _sync(device)
            start = time.perf_counter()
    _sync(device)
    return (time.perf_counter() - start) / args.steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="motlab YAML (repeat)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--synthetic", action="store_true", help="random tokens, no data module")
    parser.add_argument(
        "--loop",
        choices=["lightning", "bare", "plain"],
        default="lightning",
        help="motlab's Trainer.fit; a bare loop compiling what motlab compiles; a plain loop "
        "compiling only the model (differs from bare with --compile)",
    )
    parser.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="peak FLOP/s of the device for MFU (default: known-device table)",
    )
    args, extra = parser.parse_known_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as workdir:
        cli = build(args, extra, workdir)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step_s = (time_lightning if args.loop == "lightning" else time_bare)(cli, args)

    cfg = cli.model.net.cfg
    dm = cli.datamodule
    stats = model_stats(cfg)
    tokens_per_step = dm.batch_size * dm.seq_len
    tokens_per_s = tokens_per_step / step_s
    device = torch.device(args.device)
    peak = args.peak_flops or peak_flops_per_device(device, str(cli.trainer.precision))
    result = {
        "variant": cfg.ffn.variant if cfg.routed_blocks() else "dense",
        "loop": args.loop,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(step_s * 1000, 3),
        "mfu": round(tokens_per_s * stats.flops_per_token / peak, 4) if peak else None,
        "peak_mem_gb": (
            round(torch.cuda.max_memory_allocated() / 2**30, 3) if args.device == "cuda" else None
        ),
        "params": stats.total_params,
        "active_params": stats.active_params,
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_ff": cfg.d_ff,
        "seq_len": dm.seq_len,
        "batch_size": dm.batch_size,
        "vocab_size": cfg.vocab_size,
        "n_experts": getattr(cfg.ffn, "n_experts", None),
        "device": (torch.cuda.get_device_name() if args.device == "cuda" else "cpu"),
        "precision": str(cli.trainer.precision),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "compile": args.compile,
        "synthetic": args.synthetic,
        "steps": args.steps,
        "configs": args.config,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

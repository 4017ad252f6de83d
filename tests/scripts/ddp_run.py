"""``motlab fit`` on two CPU processes (DDP over gloo), recording what every rank saw.

Run by ``tests/test_ddp.py`` as a standalone script (Lightning's DDP launcher re-runs this very
command line for rank 1, which under pytest would re-run pytest):

    python tests/scripts/ddp_run.py OUT_DIR C4_DIR TOKENIZER_JSON [extra motlab flags]

(``-`` for C4_DIR and TOKENIZER_JSON: the defaults, C4 and GPT-2's tokenizer from the hub.)

Each rank writes ``OUT_DIR/rank{r}.pt``: its train batches, its local loss per step, and its
net weights at the end. TensorBoard events (rank 0) go to ``./runs/mot`` in the working dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from motlab.cli import cli_main

REPO = Path(__file__).resolve().parents[2]


class Recorder(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.batches: list[torch.Tensor] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append(batch.detach().cpu().clone())
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "batches": self.batches,
            "losses": self.losses,
            "state": state,
            "checkpoint_io": type(trainer.strategy.checkpoint_io).__name__,
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def main() -> None:
    out, c4_dir, tokenizer = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "fit",
        *("--config", str(REPO / "conf/mot.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
        *(("--data.path", c4_dir) if c4_dir != "-" else ()),
        *(("--data.tokenizer", tokenizer) if tokenizer != "-" else ()),
        *("--data.seq_len", "16", "--data.num_workers", "1", "--data.val_batches", "1"),
        *("--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"),
        *("--trainer.max_steps", "2", "--trainer.val_check_interval", "2"),
        *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
        *sys.argv[4:],
    ]
    cli_main(args, trainer_defaults={"callbacks": [Recorder(out)]})


if __name__ == "__main__":
    main()

"""Two real processes (gloo): loader states are gathered from every rank, and each rank resumes
from the gathered state (which is what rank 0 writes to the checkpoint)."""

from __future__ import annotations

import os
import pickle
from itertools import islice
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from motlab.data.loader import ResumableLoader
from motlab.data.sources import JsonLinesFile
from motlab.data.tokenizer import load_tokenizer


def _rank_main(rank: int, files: list[str], tokenizer: str, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=2)
    try:
        from motlab.data.stream import PackedStream

        tok = load_tokenizer(tokenizer)

        def loader() -> ResumableLoader:
            ds = PackedStream(
                [JsonLinesFile(f) for f in files],
                tok,
                eot_id=50256,
                seq_len=16,
                batch_size=2,
                shuffle_buffer=8,
                shuffle_files=True,
                cycle=True,
                rank=rank,
                world_size=2,
            )
            return ResumableLoader(ds, rank=rank, world_size=2)

        ref = loader()
        it = iter(ref)
        first = [next(it) for _ in range(4)]
        state = ref.state_dict()  # collective: both ranks call it, like a checkpoint dump
        reference = [next(it) for _ in range(3)]
        resumed = loader()
        resumed.load_state_dict(pickle.loads(pickle.dumps(state)))
        got = list(islice(resumed, 3))
        with open(f"{tmp}/rank{rank}.pt", "wb") as f:
            torch.save({"first": first, "state": state, "ref": reference, "got": got}, f)
    finally:
        dist.destroy_process_group()


def test_states_of_all_ranks_are_gathered_and_restored(
    small_files: list[Path], tokenizer_path: Path, tmp_path: Path
) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(
        _rank_main,
        args=([str(p) for p in small_files[:4]], str(tokenizer_path), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    state = out[0]["state"]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert out[1]["state"]["ranks"] == state["ranks"]  # every rank holds the full picture
    assert not torch.equal(out[0]["first"][0], out[1]["first"][0])  # ranks read different data
    for r in range(2):
        assert all(torch.equal(a, b) for a, b in zip(out[r]["ref"], out[r]["got"], strict=True))

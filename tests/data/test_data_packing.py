"""Unit tests for packing, the shuffle buffer and the file-sharding rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from motlab.data.packing import Packer
from motlab.data.sharding import assign_files, split_note, world_info
from motlab.data.shuffle import ShuffleBuffer

EOT = 99


def test_windows_overlap_by_one_and_keep_every_token() -> None:
    p = Packer(seq_len=4, eot_id=EOT)
    p.add([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12]])  # stream: 1 2 3 E 4 .. 12 E (14 tokens)
    assert p.windows_ready() == 3  # needs 4k + 1 tokens for k windows
    w = p.take(3)
    assert w.dtype == torch.int64 and w.shape == (3, 5)
    assert w.tolist() == [[1, 2, 3, EOT, 4], [4, 5, 6, 7, 8], [8, 9, 10, 11, 12]]
    # Targets of window k == inputs of window k shifted by one; last target == next first input.
    assert torch.equal(w[:-1, -1], w[1:, 0])
    assert p.remaining().tolist() == [12, EOT]
    with pytest.raises(ValueError):
        p.take(1)


def test_long_document_runs_across_windows_and_state_roundtrip() -> None:
    p = Packer(seq_len=3, eot_id=EOT)
    doc = list(range(20))
    p.add([doc])
    state = p.state()
    w = p.take(p.windows_ready())
    flat = torch.cat([w[:, :-1].flatten(), torch.tensor(p.remaining())]).tolist()
    assert flat == doc + [EOT]
    q = Packer(seq_len=3, eot_id=EOT)
    q.load(state)
    assert torch.equal(q.take(q.windows_ready()), w)


def test_shuffle_buffer_permutes_and_restores_exactly() -> None:
    texts = [f"doc{i}" for i in range(50)]

    def run(buf: ShuffleBuffer, start: int, stop: int) -> list[int]:
        out = []
        for i in range(start, stop):
            item = buf.push(i, texts[i])
            if item is not None:
                out.append(item[0])
        return out

    buf = ShuffleBuffer(8, np.random.default_rng(0))
    first = run(buf, 0, 20)
    state = buf.state()
    rest = run(buf, 20, 50)
    while (item := buf.pop()) is not None:
        rest.append(item[0])
    assert sorted(first + rest) == list(range(50))
    assert first + rest != list(range(50))

    again = ShuffleBuffer(8, np.random.default_rng(123))
    ords = np.frombuffer(state["ordinals"], dtype=np.int64)
    again.load(state, {int(o): texts[int(o)] for o in ords})
    rest2 = run(again, 20, 50)
    while (item := again.pop()) is not None:
        rest2.append(item[0])
    assert rest2 == rest


def test_shuffle_buffer_off_is_identity() -> None:
    buf = ShuffleBuffer(0, np.random.default_rng(0))
    assert [buf.push(i, "t") for i in range(3)] == [(0, "t"), (1, "t"), (2, "t")]
    assert buf.pop() is None


@pytest.mark.parametrize(("n_files", "n_streams"), [(8, 4), (5, 4), (3, 4), (1, 3), (7, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_assignment_is_a_partition_of_records(n_files: int, n_streams: int, shuffle: bool) -> None:
    records = 13  # per file
    owner: dict[tuple[int, int], int] = {}
    for s in range(n_streams):
        tasks = assign_files(n_files, s, n_streams, epoch=3, seed=1, shuffle=shuffle)
        assert tasks, "no stream may be starved"
        for t in tasks:
            for r in range(t.offset, records, t.stride):
                assert (t.file, r) not in owner, "a record was given to two streams"
                owner[(t.file, r)] = s
    assert len(owner) == n_files * records
    assert (split_note(n_files, n_streams, "train") is None) == (n_files % n_streams == 0)


def test_file_order_changes_with_epoch_only_when_shuffling() -> None:
    a = [t.file for t in assign_files(16, 0, 2, epoch=0, seed=1, shuffle=True)]
    b = [t.file for t in assign_files(16, 0, 2, epoch=1, seed=1, shuffle=True)]
    assert a != b
    assert [t.file for t in assign_files(16, 1, 2, epoch=5, seed=1, shuffle=False)] == list(
        range(1, 16, 2)
    )


def test_world_info_overrides_and_defaults() -> None:
    assert world_info(None) == (0, 1)
    assert world_info(None, rank=1, world_size=2) == (1, 2)
    with pytest.raises(ValueError):
        world_info(None, rank=2, world_size=2)

    class FakeTrainer:
        global_rank, world_size = 3, 4

    assert world_info(FakeTrainer()) == (3, 4)

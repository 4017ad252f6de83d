"""The packed stream: batch format, exactly-once coverage across ranks x workers, exact resume."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from motlab.data.loader import ResumableLoader
from motlab.data.sources import JsonLinesFile, streamed_files
from motlab.data.stream import PackedStream

SEQ = 32
EOT = 50256


def make_stream(files: list, tok: Tokenizer, **kwargs) -> PackedStream:
    args = dict(eot_id=EOT, seq_len=SEQ, batch_size=3, shuffle_buffer=16, seed=7)
    args.update(kwargs)
    return PackedStream(files, tok, encode_docs=8, **args)


def direct_docs(tok: Tokenizer, texts: list[str]) -> Counter:
    return Counter(tuple(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))


def test_batches_shape_dtype_shift_and_eot(
    tok: Tokenizer, small_files: list[Path], small_texts: list[str], unpack
) -> None:
    files = [JsonLinesFile(str(p)) for p in small_files]
    ds = make_stream(files, tok, shuffle_buffer=0)
    batches = list(ds)
    assert all(b.dtype == torch.int64 and b.shape[1] == SEQ + 1 for b in batches)
    assert all(b.shape[0] == 3 for b in batches[:-1]) and 1 <= batches[-1].shape[0] <= 3
    windows = torch.cat(batches)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are inputs shifted by one
    assert torch.equal(windows[1:, 0], windows[:-1, -1])  # consecutive windows are contiguous
    # One stream, no shuffling: the documents in file order, each followed by end-of-text.
    docs = unpack(list(windows), ds._core.packer.remaining().tolist(), EOT)
    expected = [tuple(e.ids) for e in tok.encode_batch(small_texts, add_special_tokens=False)]
    assert docs == expected
    assert max(map(len, expected)) > 3 * SEQ  # a long document is split, never dropped


@pytest.mark.parametrize("shuffle_buffer", [0, 16])
def test_every_token_exactly_once_over_2_ranks_x_2_workers(
    tok: Tokenizer, small_files: list[Path], small_texts: list[str], unpack, shuffle_buffer: int
) -> None:
    files = [JsonLinesFile(str(p)) for p in small_files]  # 5 files for 4 streams: one is striped
    seen: Counter = Counter()
    for rank in range(2):
        for worker in range(2):
            ds = make_stream(
                files,
                tok,
                rank=rank,
                world_size=2,
                worker_id=worker,
                num_workers=2,
                shuffle_buffer=shuffle_buffer,
                shuffle_files=True,
            )
            windows = [w for batch in ds for w in batch]
            assert windows, "every stream gets data"
            leftover = ds._core.packer.remaining().tolist()
            assert len(leftover) <= SEQ
            seen.update(unpack(windows, leftover, EOT))
    assert seen == direct_docs(tok, small_texts)


def test_shuffling_changes_order_deterministically(tok: Tokenizer, small_files: list[Path]) -> None:
    files = [JsonLinesFile(str(p)) for p in small_files]
    a = torch.cat(list(make_stream(files, tok, shuffle_files=True)))
    b = torch.cat(list(make_stream(files, tok, shuffle_files=True)))
    c = torch.cat(list(make_stream(files, tok, shuffle_buffer=0)))
    d = torch.cat(list(make_stream(files, tok, shuffle_files=True, seed=8)))
    assert torch.equal(a, b)
    assert not torch.equal(a[:10], c[:10]) and not torch.equal(a[:10], d[:10])


@pytest.mark.parametrize("cycle", [True, False], ids=["endless", "one-pass"])
def test_resume_at_every_step(tok: Tokenizer, small_files: list[Path], cycle: bool) -> None:
    """Save after each batch (during the buffer fill, across epoch ends, while the buffer drains
    at the end of a finite pass), restore into a fresh stream and compare the next batches."""
    files = [JsonLinesFile(str(p)) for p in small_files[:2]]

    def stream() -> PackedStream:
        return make_stream(files, tok, shuffle_files=True, cycle=cycle, batch_size=2)

    ds = stream()
    states, batches = [ds.state_dict()], []
    for batch in islice(ds, 60):  # ~1.2 passes over the two files
        batches.append(batch)
        states.append(ds.state_dict())
    for k in range(len(batches)):
        resumed = stream()
        resumed.load_state_dict(states[k])
        got = list(islice(resumed, 3))
        expected = batches[k : k + 3]
        if len(expected) < 3 and cycle:
            continue  # the reference run stopped at 60 batches; the endless stream goes on
        assert len(got) == len(expected), f"step {k}"
        assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True)), f"step {k}"


def test_state_mismatch_is_refused(tok: Tokenizer, small_files: list[Path]) -> None:
    files = [JsonLinesFile(str(p)) for p in small_files]
    ds = make_stream(files, tok, cycle=True)
    it = iter(ds)
    next(it)
    state = ds.state_dict()
    other = make_stream(files, tok, cycle=True, seq_len=SEQ * 2)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="does not match"):
        iter(other)
    other = make_stream(files, tok, cycle=True, rank=1, world_size=2)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="same number of ranks"):
        iter(other)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resume_with_workers_and_shuffling(
    tok: Tokenizer, small_files: list[Path], num_workers: int
) -> None:
    """StatefulDataLoader path: iterate, save, keep going (reference); rebuild, restore, compare;
    then resume a second time from a state saved after the first resume."""
    files = [JsonLinesFile(str(p)) for p in small_files]

    def loader() -> ResumableLoader:
        ds = make_stream(files, tok, shuffle_files=True, cycle=True, batch_size=2)
        return ResumableLoader(ds, num_workers=num_workers)

    ref_loader = loader()
    it = iter(ref_loader)
    for _ in range(7):
        next(it)
    state = ref_loader.state_dict()
    reference = [next(it) for _ in range(10)]

    first = loader()
    first.load_state_dict(state)
    it = iter(first)
    got = [next(it) for _ in range(4)]
    state2 = first.state_dict()
    assert all(torch.equal(x, y) for x, y in zip(got, reference[:4], strict=True))

    second = loader()
    second.load_state_dict(state2)
    got2 = list(islice(second, 6))
    assert all(torch.equal(x, y) for x, y in zip(got2, reference[4:], strict=True))


def test_loader_state_lags_by_unconsumed_batches(tok: Tokenizer, small_files: list[Path]) -> None:
    """With one batch prefetched by the consumer, the state is the one after the batch before."""
    files = [JsonLinesFile(str(p)) for p in small_files]
    ds = make_stream(files, tok, cycle=True)
    lo = ResumableLoader(ds, track_consumer=True)
    it = iter(lo)
    batches = [next(it) for _ in range(5)]
    for _ in range(4):
        lo.mark_consumed()  # the consumer has only trained on 4 of them
    state = lo.state_dict()
    again = ResumableLoader(make_stream(files, tok, cycle=True))
    again.load_state_dict(state)
    assert torch.equal(next(iter(again)), batches[4])


class _TaggedStream(PackedStream):
    """Test helper: yields ``(worker_id, batch)`` so a test can regroup batches by worker."""

    def __iter__(self):
        from torch.utils.data import get_worker_info

        wid = get_worker_info().id
        return ((wid, b) for b in super().__iter__())


def test_hub_style_source_through_datasets_streaming(
    tok: Tokenizer, small_files: list[Path], small_texts: list[str], unpack
) -> None:
    """The hub path (``datasets`` streaming, one shard per file) with 2 real loader workers:
    both workers get data (``datasets`` would otherwise re-shard inside workers, starving one)
    and every document arrives exactly once."""
    import datasets

    ds = datasets.load_dataset(
        "json", data_files=[str(p) for p in small_files], split="train", streaming=True
    )
    files = streamed_files(ds, "local-json")
    assert len(files) == 5
    stream = _TaggedStream(
        files, tok, eot_id=EOT, seq_len=SEQ, batch_size=1, shuffle_buffer=4, encode_docs=8
    )
    per_worker: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for wid, batch in ResumableLoader(stream, num_workers=2):
        per_worker[wid].append(batch[0])
    seen: Counter = Counter()
    for windows in per_worker.values():
        assert windows, "both workers get data"
        # The tail (< SEQ tokens) stays in the worker; append the end-of-text it ends with.
        tokens = [t for w in windows for t in w[:-1].tolist()] + [int(windows[-1][-1])]
        tail_start = max(i for i, t in enumerate(tokens[:-1]) if t == EOT) + 1
        seen.update(unpack([], tokens[:tail_start], EOT))
        seen[None] += 1  # one partly unread document per worker
    total = direct_docs(tok, small_texts)
    assert not (seen - total - Counter({None: 2})), "no document is duplicated or altered"
    assert sum(seen.values()) == sum(total.values())


def test_malformed_records_are_reported_a_few_per_file_then_counted(
    tok: Tokenizer, small_texts: list[str], tmp_path: Path
) -> None:
    """One good record, then 60 without text, in each of two files: the first few of each file
    are reported one by one, the rest in one count per file; the counter stays exact."""
    import json
    import warnings

    from motlab.data.stream import MALFORMED_REPORTED_PER_FILE, MalformedRecordWarning

    files = []
    for name in ("a.jsonl", "b.jsonl"):
        lines = [json.dumps({"text": small_texts[0]})] + [json.dumps({"body": "x"})] * 60
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        files.append(JsonLinesFile(str(tmp_path / name)))
    ds = make_stream(files, tok, shuffle_buffer=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(ds)
    messages = [str(w.message) for w in caught if issubclass(w.category, MalformedRecordWarning)]
    assert ds.malformed_records == 120
    for name in ("a.jsonl", "b.jsonl"):
        mine = [m for m in messages if name in m]
        one_by_one = [m for m in mine if "skipped malformed record" in m]
        assert len(one_by_one) == MALFORMED_REPORTED_PER_FILE
        assert f"{name}, line 2: skipped malformed record (no 'text' field)" in one_by_one[0]
        more = 60 - MALFORMED_REPORTED_PER_FILE
        summary = [m for m in mine if f"{more} more malformed records" in m]
        assert len(summary) == 1 and "60 in this file" in summary[0]
    assert len(messages) == 2 * (MALFORMED_REPORTED_PER_FILE + 1)


def test_a_pass_without_documents_names_its_cause(
    tok: Tokenizer, small_files: list[Path], tmp_path: Path
) -> None:
    """A full pass that yields no document: malformed records (the data) or no records at all
    for this stream (too many streams for the data) are told apart."""
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n' * 30)
    ds = make_stream([JsonLinesFile(str(tmp_path / "bad.jsonl"))], tok, cycle=True)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError) as err:
        next(iter(ds))
    message = str(err.value)
    assert "30 records" in message and "malformed" in message and "data.text_field" in message
    assert "fewer loader workers" not in message
    # Two streams, one file of one record: stream 1 gets no record, the data is too small.
    (tmp_path / "one.jsonl").write_text('{"text": "hello world"}\n')
    one = [JsonLinesFile(str(tmp_path / "one.jsonl"))]
    ds = make_stream(one, tok, cycle=True, worker_id=1, num_workers=2)
    with pytest.raises(RuntimeError, match="no records.*fewer loader workers/ranks or more data"):
        next(iter(ds))

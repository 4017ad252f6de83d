"""C4DataModule: configuration, sources, failure behaviour, validation determinism."""

from __future__ import annotations

import gzip
import json
import socket
import time
from pathlib import Path

import pytest
import torch

from motlab.data import C4DataModule, HubUnreachableError, MalformedRecordWarning
from motlab.data.sources import JsonLinesFile, glob_files, local_c4_files
from motlab.data.stream import MALFORMED_REPORTED_PER_FILE


def dm_for(tokenizer_path: Path, **kwargs) -> C4DataModule:
    args = dict(tokenizer=str(tokenizer_path), seq_len=32, batch_size=2, num_workers=0)
    args.update(kwargs)
    return C4DataModule(**args)


def test_tokenizer_from_path_exposes_vocab_and_eot(tokenizer_path: Path) -> None:
    dm = dm_for(tokenizer_path)
    assert dm.vocab_size == 50257
    assert dm.eot_id == 50256 == dm.tokenizer.token_to_id("<|endoftext|>")
    assert dm_for(tokenizer_path.parent).vocab_size == 50257  # a folder holding tokenizer.json


def test_missing_tokenizer_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope/tokenizer.json"):
        C4DataModule(tokenizer=str(tmp_path / "nope" / "tokenizer.json"))


def test_hub_tokenizer_offline_says_how_to_use_a_local_one() -> None:
    try:
        dm = C4DataModule(tokenizer="gpt2")  # conftest switched the hub off
    except HubUnreachableError as e:
        assert "--data.tokenizer" in str(e)
    else:  # pragma: no cover - a machine with gpt2 in its hub cache
        assert dm.vocab_size == 50257


def test_hub_unreachable_offline_fails_fast_with_hint(tokenizer_path: Path) -> None:
    dm = dm_for(tokenizer_path)  # path=None: stream allenai/c4 from the hub
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"--data\.path") as err:
        dm.setup("fit")
    assert time.monotonic() - start < 5
    assert "--data.tokenizer" in str(err.value) and "allenai/c4" in str(err.value)


def test_hub_connection_failure_is_translated(
    tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online mode but no route to the hub: the connect probe fails in well under a second."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("connection refused (simulated)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    dm = dm_for(tokenizer_path)
    with pytest.raises(HubUnreachableError, match=r"simulated.*--data\.path"):
        dm.setup("fit")


def test_datasets_connection_error_is_translated(
    tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    import motlab.hub

    monkeypatch.setattr(motlab.hub, "probe_hub", lambda: None)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub (simulated)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(HubUnreachableError, match=r"--data\.path DIR"):
        dm_for(tokenizer_path).setup("fit")


def test_local_c4_layout(c4_dir: Path, tokenizer_path: Path) -> None:
    train = local_c4_files(str(c4_dir), "en", "train")
    val = local_c4_files(str(c4_dir), "en", "validation")
    assert len(train) == 8 and len(val) == 1
    assert all(isinstance(f, JsonLinesFile) for f in train + val)
    dm = dm_for(tokenizer_path, path=str(c4_dir), val_batches=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 33) and batch.dtype == torch.long
    assert [b.shape for b in dm.val_dataloader()] == [(2, 33), (2, 33)]


def test_missing_path_and_empty_glob_are_named(tmp_path: Path, tokenizer_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        dm_for(tokenizer_path, path=str(tmp_path / "no-such-dir")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train files"):
        dm_for(tokenizer_path, path=str(tmp_path / "empty")).setup("fit")
    pattern = str(tmp_path / "*.jsonl")
    with pytest.raises(FileNotFoundError, match=r"--data\.train_files.*\*\.jsonl"):
        dm_for(tokenizer_path, train_files=pattern, val_files=pattern).setup("fit")
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match=r"--data\.val_files is not set"):
        dm_for(tokenizer_path, train_files=str(tmp_path / "t.jsonl")).setup("fit")
    (tmp_path / "broken.json.gz").write_bytes(b"not gzip")
    with pytest.raises(OSError, match="broken.json.gz"):
        dm_for(tokenizer_path, train_files=str(tmp_path / "broken.json.gz"), val_batches=0).setup(
            "fit"
        )
    with pytest.raises(ValueError, match="unsupported"):
        (tmp_path / "a.txt").write_text("x")
        glob_files(str(tmp_path / "a.txt"), "--data.train_files")


def _write_bad_file(path: Path, good: list[str]) -> Path:
    lines = [
        json.dumps({"text": good[0]}),
        '{"text": "unterminated',  # line 2: bad JSON
        json.dumps({"url": "no text"}),  # line 3: missing text
        "",  # line 4: blank, not a record
        json.dumps({"text": 17}),  # line 5: text not a string
        json.dumps({"text": good[1]}),
        json.dumps(["not", "an", "object"]),  # line 7
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_records_warn_with_file_and_line_and_count(
    tmp_path: Path, tokenizer_path: Path, c4_docs: list[str]
) -> None:
    bad = _write_bad_file(tmp_path / "bad.jsonl", c4_docs)
    dm = dm_for(tokenizer_path, train_files=str(bad), val_files=str(bad), shuffle_buffer=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    with pytest.warns(MalformedRecordWarning) as caught:
        it = iter(loader)
        for _ in range(40):  # more than one pass over the two good documents
            next(it)
    messages = [str(w.message) for w in caught]
    for line in (2, 3, 5, 7):
        assert any(f"bad.jsonl, line {line}:" in m for m in messages), line
    assert not any("line 4:" in m for m in messages)
    assert dm.malformed_records >= 8  # 4 per pass, at least two passes
    # The first few of a file one by one, then one count per pass over the file: every
    # skipped record is either reported alone or counted in a "more" line.
    shown = sum("skipped malformed record" in m for m in messages)
    counted = sum(int(m.split(" more malformed")[0].rsplit(" ", 1)[-1]) for m in messages
                  if " more malformed" in m)  # fmt: skip
    assert shown == MALFORMED_REPORTED_PER_FILE
    assert shown + counted <= dm.malformed_records <= shown + counted + 4  # + the pass under way


def _write_records(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_records_without_the_text_field_fail_once_before_training(
    tmp_path: Path, tokenizer_path: Path, c4_docs: list[str], recwarn
) -> None:
    """Records keyed ``content`` under the default ``data.text_field: text``: one error at
    setup naming the file, the option and the keys there are, not a warning per record."""
    records = [{"content": t, "url": "u"} for t in c4_docs[:50]]
    wrong = _write_records(tmp_path / "wrong.jsonl", records)
    good = _write_records(tmp_path / "good.jsonl", [{"text": t} for t in c4_docs[:5]])
    with gzip.open(tmp_path / "wrong.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    for train, val in ((wrong, good), (good, wrong), (tmp_path / "wrong.jsonl.gz", good)):
        dm = dm_for(tokenizer_path, train_files=str(train), val_files=str(val))
        with pytest.raises(ValueError) as err:
            dm.setup("fit")
        message = str(err.value)
        assert Path(train if train != good else val).name in message
        assert "data.text_field" in message and "'text'" in message
        assert "'content'" in message and "'url'" in message
    assert not [w for w in recwarn if issubclass(w.category, MalformedRecordWarning)]
    # Told where the text is, the same files train.
    dm = dm_for(tokenizer_path, train_files=str(wrong), val_files=str(wrong), text_field="content")
    dm.setup("fit")
    assert next(iter(dm.train_dataloader())).shape == (2, 33)


def test_files_without_any_usable_record_fail_at_setup(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    not_json = tmp_path / "table.jsonl"
    not_json.write_text("id,text\n1,hello\n2,world\n")
    numbers = _write_records(tmp_path / "numbers.jsonl", [{"text": i} for i in range(30)])
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"body": "x"}, {"body": "y"}]))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    for path, why in (
        (not_json, "invalid JSON"),
        (numbers, "'text' is int"),
        (array, "'body'"),
        (blank, "no records"),
    ):
        with pytest.raises(ValueError, match=why) as err:
            dm_for(tokenizer_path, train_files=str(path), val_batches=0).setup("fit")
        assert path.name in str(err.value)


def test_parquet_text_column_must_hold_strings(tmp_path: Path, tokenizer_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")
    with pytest.raises(ValueError, match=r"ints\.parquet.*'text'.*int64.*data\.text_field"):
        dm_for(tokenizer_path, train_files=str(tmp_path / "ints.parquet"), val_batches=0).setup(
            "fit"
        )


def test_malformed_count_from_worker_processes(
    tmp_path: Path, tokenizer_path: Path, c4_docs: list[str]
) -> None:
    bad = _write_bad_file(tmp_path / "bad.jsonl", c4_docs)

    def after_three_batches(num_workers: int) -> C4DataModule:
        dm = dm_for(tokenizer_path, train_files=str(bad), val_files=str(bad),
                    num_workers=num_workers, shuffle_buffer=0)  # fmt: skip
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        for _ in range(3):
            next(it)
        return dm

    # Counted in the worker, read from its loader state: the count of the same stream read in
    # this process, where the reader, filling its first batch of documents to tokenize, has
    # gone through whole passes over the file (4 malformed records each) and the 3 malformed
    # records before the second document of the next.
    dm = after_three_batches(num_workers=1)
    assert dm.malformed_records == after_three_batches(num_workers=0).malformed_records
    assert dm.malformed_records % 4 == 3 and dm.malformed_records > 4
    before = dm.malformed_records
    assert len(list(dm.val_dataloader())) > 0
    assert dm.malformed_records == before + 4


def test_validation_is_fixed_cached_and_independent_of_workers(
    c4_dir: Path, tokenizer_path: Path
) -> None:
    def val(**kwargs) -> list[torch.Tensor]:
        dm = dm_for(tokenizer_path, path=str(c4_dir), **kwargs)
        dm.setup("validate")
        return list(dm.val_dataloader())

    first = val(val_batches=3, num_workers=2)
    assert len(first) == 3 and all(b.shape == (2, 33) for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, val(val_batches=3, seed=99), strict=True))
    # Two ranks split the first 2 * 3 * 2 windows round-robin; one rank with 6 batches sees
    # the same windows in order.
    single = torch.cat(val(val_batches=6))
    ranks = [torch.cat(val(val_batches=3, global_rank=r, world_size=2)) for r in range(2)]
    assert torch.equal(ranks[0], single[0::2]) and torch.equal(ranks[1], single[1::2])
    # Validation starts at the beginning of the first validation document.
    with gzip.open(c4_dir / "en" / "c4-validation.00000-of-00001.json.gz", "rt") as f:
        text = json.loads(f.readline())["text"]
    ids = dm_for(tokenizer_path).tokenizer.encode(text).ids
    assert single[0].tolist() == ids[:33]
    dm = dm_for(tokenizer_path, path=str(c4_dir), val_batches=2)
    dm.setup("validate")
    loader = dm.val_dataloader()
    assert list(loader)[0] is list(loader)[0]  # cached after the first pass
    assert dm_for(tokenizer_path, path=str(c4_dir), val_batches=0).val_dataloader() == []


def test_uneven_files_warn_about_the_split(
    tokenizer_path: Path, small_files: list[Path], recwarn
) -> None:
    dm = dm_for(
        tokenizer_path,
        train_files=[str(p) for p in small_files[:3]],
        val_batches=0,
        num_workers=2,
    )
    with pytest.warns(UserWarning, match="record-wise"):
        dm.setup("fit")


def test_ranks_read_disjoint_data(tokenizer_path: Path, small_files: list[Path]) -> None:
    files = [str(p) for p in small_files[:4]]
    firsts = []
    for rank in range(2):
        dm = dm_for(
            tokenizer_path, train_files=files, val_batches=0, global_rank=rank, world_size=2
        )
        dm.setup("fit")
        assert (dm.rank, dm.world) == (rank, 2)
        firsts.append(next(iter(dm.train_dataloader())))
    assert not torch.equal(firsts[0], firsts[1])


def test_bad_arguments_fail_in_init(tokenizer_path: Path) -> None:
    with pytest.raises(ValueError, match="seq_len"):
        dm_for(tokenizer_path, seq_len=0)
    with pytest.raises(ValueError, match="shuffle_buffer"):
        dm_for(tokenizer_path, shuffle_buffer=-1)


def test_parquet_and_gzipped_json_globs(
    tmp_path: Path, tokenizer_path: Path, c4_docs: list[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [c4_docs[0], None, c4_docs[1]]}), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "b.json.gz", "wt") as f:
        f.write(json.dumps({"text": c4_docs[2]}) + "\n")
    dm = dm_for(
        tokenizer_path,
        train_files=[str(tmp_path / "*.parquet"), str(tmp_path / "*.json.gz")],
        val_files=str(tmp_path / "a.parquet"),
        shuffle_buffer=0,
        val_batches=1,
    )
    dm.setup("fit")
    assert [Path(f.name).name for f in dm._files["train"]] == ["a.parquet", "b.json.gz"]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        dm_for(tokenizer_path, train_files=str(tmp_path / "c.parquet"), val_batches=0).setup("fit")
    with pytest.warns(MalformedRecordWarning, match=r"a\.parquet, row 2: .*NoneType"):
        assert next(iter(dm.train_dataloader())).shape == (2, 33)
        assert len(list(dm.val_dataloader())) == 1

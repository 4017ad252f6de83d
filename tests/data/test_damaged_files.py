"""Damaged data files (motlab.data.damaged): found before training they are an error naming the
file and its last good record; found while training, the rest of the file is skipped with a
warning and counted as one malformed record, never an exception out of a loader worker, and
exact resume holds across the skipped tail."""

from __future__ import annotations

import gzip
import json
import re
import warnings
import zlib
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from motlab.cli import main
from motlab.data import C4DataModule
from motlab.data.damaged import DamagedFileError, DamagedFileWarning
from motlab.data.loader import ResumableLoader
from motlab.data.sources import JsonLinesFile, ParquetFile
from motlab.data.stream import PackedStream

EOT = 50256
REPO = Path(__file__).resolve().parents[2]


def _stream(files: list, tok: Tokenizer, **kwargs) -> PackedStream:
    args = dict(eot_id=EOT, seq_len=32, batch_size=2, shuffle_buffer=0, seed=7, encode_docs=8)
    args.update(kwargs)
    return PackedStream(files, tok, **args)


def _gzip_lines(path: Path, texts: list[str]) -> Path:
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    path.write_bytes(gzip.compress(lines, mtime=0))
    return path


def _cut(path: Path, keep: float) -> int:
    """Cut ``path`` (gzip) to a fraction ``keep`` of its bytes, as a partial copy leaves it;
    returns how many whole lines can still be read from it."""
    data = path.read_bytes()[: int(path.stat().st_size * keep)]
    path.write_bytes(data)
    readable = zlib.decompressobj(wbits=31).decompress(data)
    return readable.count(b"\n")


def _docs(texts: list[str], tok: Tokenizer) -> Counter:
    return Counter(tuple(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))


def _read_all(ds: PackedStream) -> tuple[Counter, list[str]]:
    """Documents of a one-pass stream (its windows unpacked at end-of-text) and its damage
    warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokens = [t for batch in ds for t in batch[:, :-1].flatten().tolist()]
    docs, current = Counter(), []
    for t in tokens:
        if t == EOT:
            docs[tuple(current)] += 1
            current = []
        else:
            current.append(t)
    damage = [str(w.message) for w in caught if issubclass(w.category, DamagedFileWarning)]
    return docs, damage


@pytest.fixture
def texts(small_texts: list[str]) -> list[str]:
    return [t[:300] for t in small_texts[:48]]


def test_a_gzip_cut_short_is_read_to_its_last_good_record(tok, texts, tmp_path) -> None:
    """The whole lines before the cut are trained on; the warning names the file, its last good
    line and the error; the tail counts as one malformed record."""
    good = _gzip_lines(tmp_path / "good.jsonl.gz", texts[:16])
    cut = _gzip_lines(tmp_path / "cut.jsonl.gz", texts[16:])
    whole_lines = _cut(cut, 0.6)
    assert 3 < whole_lines < 30
    ds = _stream([JsonLinesFile(str(good)), JsonLinesFile(str(cut))], tok)
    docs, damage = _read_all(ds)
    # Every document up to the last whole line; the partial window at the end is not yielded.
    expected = _docs(texts[:16] + texts[16 : 16 + whole_lines], tok)
    assert not docs - expected and sum((expected - docs).values()) <= 1
    assert damage == [
        f"{cut} cannot be read past line {whole_lines}, its last good record (EOFError: "
        "Compressed file ended before the end-of-stream marker was reached): skipped the rest "
        "of the file, counted as one malformed record; 1 malformed record(s) so far in data "
        "stream 0"
    ]
    assert ds.malformed_records == 1


def _not_gzip(path: Path, texts: list[str]) -> Path:
    target = path.with_suffix(".gz")
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return target


def _corrupt_deflate(path: Path, texts: list[str]) -> Path:
    data = bytearray(_gzip_lines(path, texts).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    path.write_bytes(data)
    return path


def _broken_parquet_footer(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = path.with_name("broken.parquet")
    pq.write_table(pa.table({"text": texts}), target)
    target.write_bytes(target.read_bytes()[:-12])  # the footer's length and magic bytes
    return target


def _unreadable(path: Path, texts: list[str]) -> Path:
    path.mkdir()  # a name that cannot be opened for reading (open: IsADirectoryError)
    return path


DAMAGE = {
    "not_gzip": (_not_gzip, r"at all \(BadGzipFile: Not a gzipped file"),
    # Zeroed compressed bytes decode to garbage lines (malformed records) until the gzip
    # trailer's CRC disagrees, or the deflate stream itself breaks.
    "corrupt_deflate": (_corrupt_deflate, r"past line \d+, its last good record \((BadGzip|e)"),
    "parquet_footer": (_broken_parquet_footer, r"at all \(ArrowInvalid: .*footer"),
    "unreadable": (_unreadable, r"at all \(IsADirectoryError: "),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damage_found_while_training_skips_the_rest_of_the_file(kind, tok, texts, tmp_path) -> None:
    """Each kind of damage: one warning naming the file and what failed, one malformed record,
    every document of the other file read."""
    make, why = DAMAGE[kind]
    good = _gzip_lines(tmp_path / "good.jsonl.gz", texts[:16])
    bad = make(tmp_path / "bad.jsonl.gz", texts[16:])
    doc_file = ParquetFile(str(bad)) if bad.suffix == ".parquet" else JsonLinesFile(str(bad))
    ds = _stream([JsonLinesFile(str(good)), doc_file], tok)
    docs, damage = _read_all(ds)
    assert len(damage) == 1 and damage[0].startswith(f"{bad} cannot be read "), damage
    assert re.search(why, damage[0]), damage[0]
    if kind == "corrupt_deflate":  # the garbage lines before the damage is found count too
        assert ds.malformed_records >= 1
    else:
        assert ds.malformed_records == 1
    # The good file is read whole (its last document may sit in the partial window at the end
    # of the pass, which a finite stream does not yield).
    assert sum((_docs(texts[:16], tok) - docs).values()) <= 1


def test_a_damaged_file_in_a_loader_worker_is_not_an_exception(
    tok, texts, tmp_path, tokenizer_path
) -> None:
    """A train loader with a worker process reads past a gzip cut short, and the data module
    counts it (what a Lightning run sees)."""
    good = _gzip_lines(tmp_path / "good.jsonl.gz", texts[:16])
    cut = _gzip_lines(tmp_path / "cut.jsonl.gz", texts * 2)
    assert _cut(cut, 0.6) > 20  # past the records setup reads: found while training
    dm = C4DataModule(
        train_files=[str(good), str(cut)], val_files=str(good), tokenizer=str(tokenizer_path),
        seq_len=32, batch_size=2, num_workers=1, shuffle_buffer=0, val_batches=1,
    )  # fmt: skip
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    for _ in range(100):  # more than a pass over both files
        next(loader)
    assert dm.malformed_records >= 1


STEPS = 90


def test_exact_resume_across_a_skipped_tail(tok, texts, tmp_path) -> None:
    """Saved before, at and after the damage, with a worker process and shuffling: a restored
    loader re-reads the damaged file, stops at the same record, and goes on with the very
    batches of the uninterrupted run."""
    good = _gzip_lines(tmp_path / "good.jsonl.gz", texts[:16])
    cut = _gzip_lines(tmp_path / "cut.jsonl.gz", texts[16:])
    _cut(cut, 0.6)
    files = [JsonLinesFile(str(good)), JsonLinesFile(str(cut))]

    def loader() -> ResumableLoader:
        ds = _stream(files, tok, shuffle_buffer=8, shuffle_files=True, cycle=True)
        return ResumableLoader(ds, num_workers=1)

    reference, states = loader(), []
    it = iter(reference)
    batches = []
    for _ in range(STEPS):  # more than two passes over the two files
        states.append(reference.state_dict())
        batches.append(next(it))
    counted = _malformed(reference)
    assert counted >= 2  # the damage was met on each pass
    for k in (3, 20, 40, 60):
        resumed = loader()
        resumed.load_state_dict(states[k])
        got = list(islice(resumed, STEPS - k))
        assert all(torch.equal(a, b) for a, b in zip(got, batches[k:], strict=True)), k
        assert _malformed(resumed) == counted, k  # the re-reading counted nothing twice


def _malformed(loader: ResumableLoader) -> int:
    return sum(int(s["malformed"]) for s in _stream_states(loader))


def _stream_states(loader: ResumableLoader) -> list[dict]:
    from motlab.data.loader import find_stream_states

    return list(find_stream_states(loader.latest_state() or {}))


@pytest.mark.parametrize("kind", ["early_cut", "not_gzip", "parquet_footer"])
def test_damage_found_before_training_is_an_error_naming_the_file(
    kind, tok, texts, tmp_path
) -> None:
    """setup reads the first records of every local file: damage there is an error naming the
    file and its last good record, not a library exception."""
    if kind == "early_cut":
        bad = _gzip_lines(tmp_path / "bad.jsonl.gz", texts)
        bad.write_bytes(bad.read_bytes()[:400])
        lines = zlib.decompressobj(wbits=31).decompress(bad.read_bytes()).count(b"\n")
        why = rf"past line {lines}, its last good record \(EOFError: "
        doc_file = JsonLinesFile(str(bad))
    else:
        make, why = DAMAGE[kind]
        bad = make(tmp_path / "bad.jsonl.gz", texts)
        doc_file = ParquetFile(str(bad)) if kind == "parquet_footer" else JsonLinesFile(str(bad))
    with pytest.raises(DamagedFileError) as raised:
        doc_file.check("text")
    message = str(raised.value)
    assert message.startswith(f"data file {bad} cannot be read ")
    assert re.search(why, message), message
    assert "replace it with a whole copy" in message


def test_motlab_fit_names_a_damaged_file_in_an_error_block(
    texts, tmp_path, capsys, tokenizer_path
) -> None:
    """A train file cut short within its first records: exit status 2 and one error block
    naming the file, before training."""
    bad = _gzip_lines(tmp_path / "bad.jsonl.gz", texts)
    bad.write_bytes(bad.read_bytes()[:400])
    good = _gzip_lines(tmp_path / "good.jsonl.gz", texts)
    with pytest.raises(SystemExit) as exited:
        main([
            "fit", "--config", str(REPO / "conf/dense.yaml"),
            "--config", str(REPO / "conf/tiny.yaml"),
            "--data.train_files", str(bad), "--data.val_files", str(good),
            "--data.tokenizer", str(tokenizer_path), "--trainer.logger", "false",
        ])  # fmt: skip
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data file {bad} cannot be read past line "), err
    assert "EOFError" in err and "Traceback" not in err

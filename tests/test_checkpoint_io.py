"""Writing checkpoints (motlab.checkpoint_io) and telling an intact one from a damaged one
(motlab.checkpoint.check_intact, newest_intact_checkpoint)."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch
from full_disk import fill_after, small_filesystem

from motlab.atomic import partials
from motlab.checkpoint import check_intact, newest_intact_checkpoint
from motlab.checkpoint_io import (
    CheckpointWriteError,
    DurableCheckpointIO,
    checkpoint_nbytes,
    format_bytes,
    with_durable_io,
)


def _checkpoint(step: int, numel: int = 100_000) -> dict:
    weight = torch.full((numel,), float(step))
    return {"state_dict": {"net.w": weight, "net.tied": weight}, "global_step": step}


def test_a_checkpoint_is_saved_whole_and_loads(tmp_path: Path) -> None:
    io = DurableCheckpointIO()
    path = tmp_path / "checkpoints/last.ckpt"
    io.save_checkpoint(_checkpoint(3), path)
    assert io.load_checkpoint(path)["global_step"] == 3
    check_intact(path)
    assert partials(path.parent) == []
    # Its size is what checkpoint_nbytes says (the shared storage once) plus the zip's overhead.
    assert 0 < path.stat().st_size - checkpoint_nbytes(_checkpoint(3)) < 4096


def test_saving_does_not_need_the_temporary_directory(tmp_path, monkeypatch) -> None:
    """Lightning's own saver writes the whole file into TMPDIR first; a small or unusable
    TMPDIR (here: one that does not exist) must not matter."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    DurableCheckpointIO().save_checkpoint(_checkpoint(1), tmp_path / "a.ckpt")
    check_intact(tmp_path / "a.ckpt")


def _fill(directory: Path) -> None:
    """Write into ``directory`` until its filesystem has no room left."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with pytest.raises(OSError, match="No space left"), open(directory / "more", "wb") as f:
        f.write(bytes(1 << 16))
        f.flush()


def test_a_full_temporary_directory_does_not_matter(tmp_path, monkeypatch) -> None:
    """TMPDIR on a small filesystem that is full (a cluster node's local /tmp): Lightning's own
    saver fails with ENOSPC there (fsspec stages the whole file in it), motlab's saves."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    with small_filesystem(tmp_path / "small-tmp", 1 << 20) as small_tmp:
        _fill(small_tmp)
        monkeypatch.setenv("TMPDIR", str(small_tmp))
        monkeypatch.setattr(tempfile, "tempdir", str(small_tmp))
        checkpoints = tmp_path / "checkpoints"
        with pytest.raises(OSError) as raised:  # the fault this is about, reproduced
            TorchCheckpointIO().save_checkpoint(_checkpoint(1), checkpoints / "theirs.ckpt")
        assert errno.ENOSPC in (raised.value.errno, getattr(raised.value.__context__, "errno", 0))
        DurableCheckpointIO().save_checkpoint(_checkpoint(1), checkpoints / "last.ckpt")
        check_intact(checkpoints / "last.ckpt")
        assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 1


def test_a_full_disk_at_the_first_save_says_what_to_do(tmp_path, monkeypatch) -> None:
    """No earlier checkpoint to resume: the error says so, and what to do; nothing is left."""
    fill_after(monkeypatch, room=1000)
    with pytest.raises(CheckpointWriteError) as raised:
        DurableCheckpointIO().save_checkpoint(_checkpoint(1), tmp_path / "last.ckpt")
    message = str(raised.value)
    assert message.startswith(f"No space left on device: could not save the checkpoint {tmp_path}")
    assert message.endswith(
        f"there is no earlier checkpoint in {tmp_path}: make room on that disk, or set "
        "--checkpoint.dirpath to one with room, then start the run again"
    )
    assert list(tmp_path.iterdir()) == []


def _assert_full_disk_error(error: CheckpointWriteError, directory: Path, intact: Path) -> None:
    message = str(error)
    assert error.errno == errno.ENOSPC
    assert f"could not save the checkpoint {directory / 'last.ckpt'}" in message
    free = re.search(rf"{re.escape(str(directory))} has (.+?) free", message)
    assert free, message
    size = format_bytes(checkpoint_nbytes(_checkpoint(2)))
    assert f"this checkpoint needs about {size}" in message
    assert message.endswith(
        f"the newest intact checkpoint is {intact} (step 1, checked to load): make room on that "
        "disk, or set --checkpoint.dirpath to one with room, then resume with --ckpt_path last"
    )


def test_a_full_disk_keeps_every_earlier_checkpoint(tmp_path, monkeypatch) -> None:
    """ENOSPC mid-write: the error names the directory, its free space, the checkpoint's size
    and the newest intact checkpoint; last.ckpt is the earlier one, byte for byte."""
    io = DurableCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(1), last)
    before = last.read_bytes()
    fill_after(monkeypatch, room=100_000)
    with pytest.raises(CheckpointWriteError) as raised:
        io.save_checkpoint(_checkpoint(2), last)
    _assert_full_disk_error(raised.value, tmp_path, last)
    assert last.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_filesystem_keeps_every_earlier_checkpoint(tmp_path: Path) -> None:
    """The same on a real filesystem that fills up (a size-limited tmpfs, where mounting is
    allowed): room for one checkpoint, not for its replacement beside it."""
    size = checkpoint_nbytes(_checkpoint(1))
    with small_filesystem(tmp_path / "disk", size + size // 2) as disk:
        io = DurableCheckpointIO()
        last = disk / "last.ckpt"
        io.save_checkpoint(_checkpoint(1), last)
        before = last.read_bytes()
        with pytest.raises(CheckpointWriteError) as raised:
            io.save_checkpoint(_checkpoint(2), last)
        _assert_full_disk_error(raised.value, disk, last)
        assert last.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["last.ckpt"]


def test_what_a_killed_save_left_is_cleared_before_the_first_save(tmp_path: Path) -> None:
    left = tmp_path / ".last.ckpt.99-00ff00ff.partial"
    left.write_bytes(b"half a checkpoint")
    io = DurableCheckpointIO()
    io.save_checkpoint(_checkpoint(1), tmp_path / "step=1.ckpt")
    assert not left.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["step=1.ckpt"]


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # bytes of the tensor data changed after the write (torch.load
        middle = len(data) // 2  # alone does not notice)
        data[middle : middle + 64] = bytes(64)
        path.write_bytes(data)
    elif how == "not_a_checkpoint":
        path.write_text("not a checkpoint")
    elif how == "empty":
        path.write_bytes(b"")
    os.utime(path)  # still the newest


@pytest.mark.parametrize("how", ["truncated", "flipped", "not_a_checkpoint", "empty"])
def test_a_damaged_checkpoint_is_named_and_the_newest_intact_one_chosen(
    tmp_path: Path, how: str
) -> None:
    io = DurableCheckpointIO()
    ckpts = tmp_path / "version_0/checkpoints"
    io.save_checkpoint(_checkpoint(2), ckpts / "step=0000002.ckpt")
    io.save_checkpoint(_checkpoint(4), ckpts / "step=0000004.ckpt")
    io.save_checkpoint(_checkpoint(5), ckpts / "last.ckpt")
    _damage(ckpts / "last.ckpt", how)
    with pytest.raises(ValueError, match=re.escape(str(ckpts / "last.ckpt"))):
        check_intact(ckpts / "last.ckpt")
    found = newest_intact_checkpoint(tmp_path)
    assert found.path == ckpts / "step=0000004.ckpt"
    assert [p for p, _ in found.damaged] == [ckpts / "last.ckpt"]
    report = found.report()
    assert str(ckpts / "last.ckpt") in report[0]
    assert report[-1].endswith(f"instead: {ckpts / 'step=0000004.ckpt'}")


def test_no_intact_checkpoint_is_an_error_naming_every_file(tmp_path: Path) -> None:
    assert newest_intact_checkpoint(tmp_path) is None  # nothing at all: nothing to resume
    for name in ("last.ckpt", "step=0000002.ckpt"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no checkpoint in .* is intact") as raised:
        newest_intact_checkpoint(tmp_path)
    assert "last.ckpt" in str(raised.value) and "step=0000002.ckpt" in str(raised.value)


def test_the_writer_is_added_unless_one_is_configured() -> None:
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    from lightning.pytorch.strategies import DDPStrategy

    assert [type(p) for p in with_durable_io(None, "ddp")] == [DurableCheckpointIO]
    theirs = TorchCheckpointIO()
    assert with_durable_io([theirs], "auto") == [theirs]
    assert with_durable_io(None, DDPStrategy(checkpoint_io=theirs)) == []


def test_fsdp_with_full_state_dicts_saves_through_it(tmp_path: Path) -> None:
    """conf/fsdp.yaml's strategy (FSDP, ``state_dict_type: full``) writes its one file through
    the strategy's checkpoint_io on global rank 0. Checked as far as the CPU allows: its save
    path with motlab's writer (training with FSDP needs a GPU)."""
    from lightning.pytorch.strategies import FSDPStrategy

    strategy = FSDPStrategy(state_dict_type="full")
    (io,) = with_durable_io(None, strategy)
    strategy.checkpoint_io = io  # what Lightning's accelerator connector does with the plugin
    left = tmp_path / ".last.ckpt~host~1~00ff00ff.partial"
    left.write_bytes(b"half")
    strategy.save_checkpoint(_checkpoint(3), tmp_path / "last.ckpt")
    check_intact(tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]

"""The README's first command on its real path: ``motlab fit --config conf/mot.yaml`` with C4
and GPT-2's tokenizer streamed from a hub (the local one, ``tests/hubserver``, through
``HF_ENDPOINT``; no ``--data.path``, no ``--data.tokenizer``), end to end.

One uninterrupted run through network faults (resets, 503s, bodies cut short), and the same
run on a hub without faults, stopped by Ctrl-C, resumed, cut off by the hub going down for
good (the run saves its last finished step and ends with an ``error:`` block), and resumed
once the hub is back: the chained run ends with the uninterrupted run's weights and losses.
Then ``motlab zeroshot`` on the hub's C4 filler, and two DDP ranks x two loader workers
reading disjoint files. Every run is a ``motlab`` process (the hub's clients read
``HF_ENDPOINT`` on import) with a fresh Hugging Face cache.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from local_hub import REPO, hub_env, motlab
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from motlab import load_model

STEPS = 8
FIT = [
    "fit",
    *("--config", str(REPO / "conf/mot.yaml"), "--config", str(REPO / "conf/tiny.yaml")),
    *("--data.seq_len", "16", "--data.val_batches", "1"),
    # Small reads (2 documents at a time, a buffer of 4) of small files (3 records each, see
    # the hub below): a run opens a new file every few steps, so a hub that goes down is
    # noticed within steps.
    *("--data.shuffle_buffer", "4", "--data.encode_docs", "2"),
    *("--data.hub_retries", "2", "--data.hub_backoff", "0.1"),
    *("--model.optim.warmup_steps", "2", "--trainer.max_steps", str(STEPS)),
    # No periodic checkpoint within the run: last.ckpt holds only the steps where a run ended
    # (finished, stopped, or cut off by the hub), so each of those saves is what is tested.
    *("--trainer.val_check_interval", "4", "--checkpoint.every_n_train_steps", "100"),
    "--trainer.enable_progress_bar=false",
]
SIGNAL = "--trainer.callbacks+=signals.SignalAt"
FAULTS = "reset:0.1,status:503:0.1,truncate:0.1"
"""What the uninterrupted run meets (with 8 retries, enough for any run of faults it meets):
the chained run, on a hub without faults, must still end with its weights."""
RETRY = re.compile(r"^hf://datasets/allenai/c4@\w+/en/\S+, byte \d+.*; retry (\d)/(\d) in", re.M)


def scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def saved_step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


def files_read(log: list[dict], split: str = "train") -> list[str]:
    """The C4 files a hub was asked for (``resolve`` GETs), in order."""
    pattern = re.compile(rf"/datasets/allenai/c4/resolve/\w+/en/(c4-{split}\.\d+-of-\d+\.json\.gz)")
    return [m.group(1) for r in log if r["method"] == "GET" and (m := pattern.search(r["path"]))]


@pytest.fixture(scope="module")
def runs(start_hub, tmp_path_factory) -> dict:
    hub = start_hub("--max-records", "3")
    root = tmp_path_factory.mktemp("hub_fit")
    env = hub_env(hub.url, root / "hf")
    out: dict = {"root": root}
    (root / "straight").mkdir()
    hub.set_faults(FAULTS, seed=1)  # the uninterrupted run meets network faults
    out["straight"] = motlab([*FIT, "--data.hub_retries", "8"], env, root / "straight")
    out["straight_faults"] = hub.faults()
    hub.set_faults("")
    out["straight_log"] = hub.log()

    chained = root / "chained"
    chained.mkdir()
    env = hub_env(hub.url, root / "hf2")  # nothing cached from the straight run
    stop = [SIGNAL, "--trainer.callbacks.batch", "1", "--trainer.callbacks.sig", "SIGINT"]
    out["stopped"] = motlab([*FIT, *stop], env, chained)
    out["stopped_step"] = saved_step(chained / "runs/mot/version_0/checkpoints/last.ckpt")
    down = [SIGNAL, "--trainer.callbacks.batch", "1", "--trainer.callbacks.sig", "SIGTERM"]
    down += ["--trainer.callbacks.pid", str(hub.proc.pid)]  # the hub goes down for good
    out["failed"] = motlab([*FIT, "--ckpt_path", "last", *down], env, chained)
    out["failed_step"] = saved_step(chained / "runs/mot/version_0/checkpoints/last.ckpt")
    hub.stop()
    hub = start_hub(*hub.args, port=hub.port)  # the hub is back (and stopped after the tests)
    out["resumed"] = motlab([*FIT, "--ckpt_path", "last"], env, chained)
    out["hub"] = hub
    return out


def test_fit_trains_on_the_hub_by_default(runs) -> None:
    """No --data.path, no --data.tokenizer: the tokenizer comes from the hub's gpt2, the
    training and validation data from its allenai/c4; validation runs and is logged."""
    done = runs["straight"]
    assert done.returncode == 0, done.stderr[-4000:]
    log = runs["straight_log"]
    assert any(r["path"] == "/gpt2/resolve/main/tokenizer.json" for r in log)
    assert files_read(log, "validation") and len(set(files_read(log))) >= 2
    run = runs["root"] / "straight/runs/mot/version_0"
    assert sorted(scalars(run, "val/loss")) == [3, 7]  # steps 4 and 8 (0-based)
    assert saved_step(run / "checkpoints/last.ckpt") == STEPS


def test_fit_on_the_hub_rides_out_network_faults(runs) -> None:
    """The uninterrupted run met resets, 503s and bodies cut short (in its loader worker and
    in validation), each retried and logged once, and trained on; that it trained on the
    fault-free stream is the test below (its weights equal those of a run without faults)."""
    assert runs["straight"].returncode == 0, runs["straight"].stderr[-4000:]
    injected = runs["straight_faults"]["total"]
    assert sum(injected.values()) >= 3 and len(injected) >= 2, injected
    retries = RETRY.findall(runs["straight"].stderr)
    assert all(budget == "8" for _, budget in retries)
    # A fault injected into a body the run was still reading when it ended is not met.
    assert 3 <= len(retries) <= sum(injected.values()), (retries, injected)


def test_a_stopped_run_on_the_hub_resumes_exactly(runs) -> None:
    """Ctrl-C after step 2 saved that step; the chained run (resumed, cut off by the hub, and
    resumed again, without network faults) ends with the weights of the uninterrupted run
    (which met network faults) and logged the same losses."""
    assert runs["stopped"].returncode == 130, runs["stopped"].stderr[-4000:]
    assert runs["stopped_step"] == 2
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-4000:]
    straight = runs["root"] / "straight/runs/mot/version_0"
    chained = runs["root"] / "chained/runs/mot/version_0"
    a = load_model(straight / "checkpoints/last.ckpt").state_dict()
    b = load_model(chained / "checkpoints/last.ckpt").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert scalars(chained, "train/loss") == scalars(straight, "train/loss")
    val = scalars(straight, "val/loss")  # (a stopped run also validates where it stops)
    assert {step: scalars(chained, "val/loss")[step] for step in val} == val


def test_a_hub_down_for_good_saves_the_last_step_and_ends_with_an_error(runs) -> None:
    """The hub goes down mid-run: the retries are logged, then the run saves its last
    finished step to last.ckpt and ends with one error block (exit 2) naming the endpoint,
    the file and what failed; resuming from that last.ckpt was exact (the test above)."""
    done = runs["failed"]
    assert done.returncode == 2, done.stderr[-4000:]
    step = runs["failed_step"]
    assert runs["stopped_step"] < step < STEPS
    err = done.stderr
    assert "Traceback" not in err
    assert re.search(rf"saved step {step} to \S+last\.ckpt; once the hub answers again", err)
    (block,) = re.findall(r"^error: .*$", err, re.MULTILINE)
    url = runs["hub"].url
    assert re.search(
        rf"cannot read hf://datasets/allenai/c4@\w+/en/c4-\S+ from the hub at {url}", block
    )
    assert "Connection refused" in block and "after 2 retries" in block
    assert RETRY.findall(err) == [("1", "2"), ("2", "2")]


def test_zeroshot_draws_its_c4_filler_from_the_hub(runs, tmp_path) -> None:
    hub = runs["hub"]
    before = len(hub.log())
    ckpt = runs["root"] / "straight/runs/mot/version_0/checkpoints/last.ckpt"
    task = REPO / "tests/fixtures/mc_yes.jsonl"
    done = motlab(
        ["zeroshot", "--checkpoint", str(ckpt), "--task", str(task), "--limit", "2"],
        hub_env(hub.url, tmp_path / "hf"),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "from the Hugging Face hub (allenai/c4)" in done.stderr
    assert files_read(hub.log()[before:])  # the filler's C4 came from the hub


def test_ddp_ranks_and_loader_workers_read_disjoint_hub_files(
    start_hub, tmp_path, c4_dir, tokenizer_path
):
    """Two ranks x two loader workers = 4 streams over C4's 8 train files from the hub: each
    stream reads its own first file (``motlab.data.sharding``: whole files dealt round-robin in
    the epoch's seeded order), each exactly once, none twice and none left to nobody; every
    document a rank trains on comes from its own streams' files, and none twice."""
    import json
    import sys
    from collections import Counter
    from itertools import islice

    from local_hub import run_in_session

    from motlab.data.sharding import assign_files
    from motlab.data.sources import local_c4_files
    from motlab.data.tokenizer import load_tokenizer

    hub = start_hub()
    env = hub_env(hub.url, tmp_path / "hf")
    env.pop("LOCAL_RANK", None)
    script = REPO / "tests/scripts/ddp_run.py"
    code, output = run_in_session(
        [sys.executable, str(script), str(tmp_path / "out"), "-", "-"]
        + ["--data.num_workers", "2", "--data.seq_len", "64"],
        tmp_path,
        env,
        timeout=300,
    )
    assert code == 0, output[-4000:]
    files = local_c4_files(str(c4_dir), "en", "train")
    names = [Path(f.name).name for f in files]
    dealt = [assign_files(len(files), s, 4, 0, 42, True) for s in range(4)]
    # Every file to exactly one stream, whole: none read twice, none left to nobody.
    assert sorted(t.file for tasks in dealt for t in tasks) == list(range(len(files)))
    assert all(t.stride == 1 for tasks in dealt for t in tasks)
    first = {s: names[dealt[s][0].file] for s in range(4)}
    # Each stream's first file once; the first file of the split once more per rank (the
    # check of its first records before training).
    expected = Counter(first.values()) + Counter({names[0]: 2})
    assert Counter(files_read(hub.log())) == expected, json.dumps(hub.log()[-40:])

    # The documents each rank trained on (a batch comes from one loader worker, its windows
    # consecutive in that worker's stream): the complete ones between two end-of-texts, and
    # the ends of the ones a batch starts or stops inside.
    tok = load_tokenizer(str(tokenizer_path))
    eot = tok.token_to_id("<|endoftext|>")
    owner: dict[tuple[int, ...], str] = {}
    for f in files:
        if Path(f.name).name in first.values():
            texts = [text for _, text, _ in islice(f.read("text"), 300)]
            for encoding in tok.encode_batch(texts, add_special_tokens=False):
                owner[tuple(encoding.ids)] = Path(f.name).name
    seen: Counter = Counter()
    for rank in (0, 1):
        record = torch.load(tmp_path / f"out/rank{rank}.pt", weights_only=False)
        for batch in record["batches"]:
            tokens = [t for w in batch for t in w[:-1].tolist()] + [int(batch[-1, -1])]
            ends = [i for i, t in enumerate(tokens) if t == eot]
            docs = [tuple(tokens[a + 1 : b]) for a, b in zip(ends, ends[1:], strict=False)]
            assert docs and all(d in owner for d in docs)
            head, tail = tuple(tokens[: ends[0]]), tuple(tokens[ends[-1] + 1 :])
            sources = {owner[d] for d in docs}
            sources |= {owner[d] for d in owner if len(head) >= 8 and d[-len(head) :] == head}
            sources |= {owner[d] for d in owner if len(tail) >= 8 and d[: len(tail)] == tail}
            (source,) = sources  # one stream, one file
            assert source in (first[2 * rank], first[2 * rank + 1])
            seen.update(docs)
    assert max(seen.values()) == 1

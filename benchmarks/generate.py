"""Generation speed: new tokens per second, KV-cached vs uncached, and transformers' GPT-2.

    python benchmarks/generate.py [--presets tiny mini] [--prompt-len 32] [--new-tokens 128]
        [--repeats 3] [--seq-len 256] [--threads 1] [--compile] [--no-hf] [--out FILE.jsonl]

For each preset (``tiny``: conf/tiny.yaml's d_model 64, d_ff 256, 2 blocks, 2 heads; ``mini``:
motlab.config.PRESETS) and each case — dense and token choice (conf/token_choice.yaml's
routing) at batch 1, MoT (conf/mot.yaml's G 32, E 32) as one group of 32 rows (one prompt and
31 filler rows) — it times greedy decoding of ``--new-tokens`` tokens after a random prompt of
``--prompt-len`` tokens (prefill included), with random weights, the GPT-2 vocabulary and
``--seq-len`` positions:

* ``motlab_cached``: :func:`motlab.complete` (prefill, then one-token steps with the KV cache);
* ``motlab_uncached``: the same with ``use_cache=False`` (a full forward pass over the context
  for every token, the output layer on the last position only);
* ``motlab_before``: what ``motlab.generate`` did before the cache — a full forward pass over
  the context for every token with the logits of every position (written out here, as it was);
* ``hf_cached``: transformers' ``GPT2LMHeadModel.generate(use_cache=True)`` at the same
  shapes (d_model, d_ff, blocks, heads, vocabulary, positions; batch 1, or 32 rows for MoT's
  group), random weights, greedy, no end-of-text;
* ``motlab_compiled`` (``--compile``): cached, the decoding step compiled (compilation is
  excluded: one warm-up run first).

The cases are interleaved, repeat by repeat, in one process, so that the ratios are measured
under the same load, with ``--threads`` torch threads (default 1: on a machine shared with other
work, OpenMP threads that wait for a busy core make wall-clock times swing by an order of
magnitude). Each run prints a JSON line with its wall-clock and CPU seconds (the process's,
which another process's load barely moves) and tokens per second by both
(``rows_tokens_per_s*`` counts every row of the batch, filler included; ``new_tokens_per_s*``
the prompt's own); the end prints a table of medians and the ratios cached / uncached, cached /
before and motlab cached / transformers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from motlab import GPT, GPTConfig, complete  # noqa: E402
from motlab.config import PRESETS  # noqa: E402

VOCAB = 50257
WARMUP_TOKENS = 4
PRESET_SIZES = {
    "tiny": {k: OmegaConf.load(REPO / "conf/tiny.yaml").model.net[k]
             for k in ("d_model", "d_ff", "n_layers", "n_heads")},
    **PRESETS,
}  # fmt: skip


def ffn_of(config: str) -> dict[str, Any]:
    """The feed-forward of a shipped config (conf/mot.yaml, ...)."""
    return dict(OmegaConf.to_container(OmegaConf.load(REPO / config).model.net.ffn))  # type: ignore[arg-type]


CASES = {  # name: (ffn, rows in the batch)
    "dense": ({"variant": "dense"}, 1),
    "token_choice": (ffn_of("conf/token_choice.yaml"), 1),
    "mot": (ffn_of("conf/mot.yaml"), 32),
}


def motlab_model(preset: str, ffn: dict[str, Any], seq_len: int) -> GPT:
    sizes = dict(PRESET_SIZES[preset])
    cfg = GPTConfig(size=None, **sizes, vocab_size=VOCAB, seq_len=seq_len, ffn=ffn)
    return GPT(cfg).eval()


def hf_model(preset: str, seq_len: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    sizes = PRESET_SIZES[preset]
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=seq_len, n_embd=sizes["d_model"], n_layer=sizes["n_layers"],
        n_head=sizes["n_heads"], n_inner=sizes["d_ff"], bos_token_id=None, eos_token_id=None,
        pad_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(cfg).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process's) of ``fn(*args, **kw)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args, **kw)
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def motlab_decode(model: GPT, prompt: list[int], new: int, filler: torch.Tensor | None,
                  **kw: Any) -> None:  # fmt: skip
    done = complete(model, [prompt], new, temperature=0, filler_WT=filler, **kw)
    assert len(done[0].tokens) == new


@torch.no_grad()
def previous_generate(model: GPT, prompt: list[int], new: int, filler: torch.Tensor | None) -> None:
    """``motlab.generate`` before the KV cache: the whole context (with the filler rows) through
    the model for every new token, logits at every position, the last one's argmax kept."""
    from motlab.inference import capacity

    tokens_BT = torch.tensor([prompt])
    with capacity(model, "dropless"):
        for _ in range(new):
            context_BT = tokens_BT[:, -model.cfg.seq_len :]
            if filler is not None:
                T, start = context_BT.shape[1], tokens_BT.shape[1] - context_BT.shape[1]
                context_BT = torch.cat([context_BT, filler[:, start : start + T]])
            next_11 = model(context_BT)[:1, -1].argmax(dim=-1, keepdim=True)
            tokens_BT = torch.cat([tokens_BT, next_11], dim=1)


@torch.no_grad()
def hf_decode(model: Any, prompt: list[int], rows: int, new: int) -> None:
    ids = torch.tensor([prompt] * rows)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
        min_new_tokens=new, do_sample=False, use_cache=True,
    )  # fmt: skip
    assert out.shape == (rows, len(prompt) + new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "mini"], choices=list(PRESET_SIZES))
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    p.add_argument("--no-hf", action="store_true", help="leave out transformers' GPT-2")
    p.add_argument("--out", default=None, help="also write the JSON lines here")
    args = p.parse_args(argv)
    if args.prompt_len + args.new_tokens > args.seq_len:
        p.error("--prompt-len + --new-tokens must fit in --seq-len (GPT-2 has no context cap)")

    torch.set_num_threads(args.threads)
    machine = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if not args.no_hf:
        import transformers

        machine["transformers"] = transformers.__version__
    out = open(args.out, "w") if args.out else None  # noqa: SIM115
    records: list[dict[str, Any]] = []

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps({**record, **machine})
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()
        records.append(record)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(VOCAB, (args.prompt_len,), generator=gen).tolist()
    models: dict[tuple[str, str], tuple[GPT, Any, torch.Tensor | None, int]] = {}
    for preset in args.presets:
        hf = None if args.no_hf else hf_model(preset, args.seq_len)
        for case in args.cases:
            ffn, rows = CASES[case]
            model = motlab_model(preset, ffn, args.seq_len)
            filler = None
            if rows > 1:
                length = args.prompt_len + max(args.new_tokens, WARMUP_TOKENS)
                filler = torch.randint(VOCAB, (rows - 1, length), generator=gen)
            models[preset, case] = (model, hf, filler, rows)
    modes = ["motlab_cached", "motlab_uncached", "motlab_before"]
    modes += ["hf_cached"] * (not args.no_hf) + ["motlab_compiled"] * args.compile
    # Warm-up (allocator, first-call costs, compilation): one short run of everything.
    for model, hf, filler, rows in models.values():
        motlab_decode(model, prompt, WARMUP_TOKENS, filler)
        if args.compile:
            motlab_decode(model, prompt, args.new_tokens, filler, compile=True)
        if hf is not None:
            hf_decode(hf, prompt, rows, WARMUP_TOKENS)
    new = args.new_tokens
    for repeat in range(args.repeats):
        for (preset, case), (model, hf, filler, rows) in models.items():
            for mode in modes:
                if mode == "hf_cached":
                    wall, cpu = timed(hf_decode, hf, prompt, rows, new)
                elif mode == "motlab_before":
                    wall, cpu = timed(previous_generate, model, prompt, new, filler)
                else:
                    wall, cpu = timed(
                        motlab_decode, model, prompt, new, filler,
                        use_cache=mode != "motlab_uncached", compile=mode == "motlab_compiled",
                    )  # fmt: skip
                emit({
                    "preset": preset, "case": case, "mode": mode, "repeat": repeat, "rows": rows,
                    "prompt_len": args.prompt_len, "new_tokens": new,
                    "seconds": round(wall, 4), "cpu_seconds": round(cpu, 4),
                    "new_tokens_per_s": round(new / wall, 2),
                    "new_tokens_per_s_cpu": round(new / cpu, 2),
                    "rows_tokens_per_s": round(rows * new / wall, 1),
                    "rows_tokens_per_s_cpu": round(rows * new / cpu, 1),
                })  # fmt: skip
    if out is not None:
        out.close()
    print(table(records, modes))
    return 0


def table(records: list[dict[str, Any]], modes: list[str]) -> str:
    """Median rows-tokens/s per case and mode (by CPU time, and by wall clock), and the ratios
    of the medians, all measured in this run."""
    keys = sorted({(r["preset"], r["case"]) for r in records}, key=lambda k: (k[0] != "tiny", k))

    def median(preset: str, case: str, mode: str, key: str) -> float:
        return statistics.median(
            r[key] for r in records if (r["preset"], r["case"], r["mode"]) == (preset, case, mode)
        )

    baselines = [m for m in ("motlab_uncached", "motlab_before", "hf_cached") if m in modes]
    head = ["preset", "case", "rows", *modes, *(f"cached / {b}" for b in baselines)]
    out = []
    for key, clock in (("rows_tokens_per_s_cpu", "CPU time"), ("rows_tokens_per_s", "wall clock")):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for preset, case in keys:
            rows = next(r["rows"] for r in records if (r["preset"], r["case"]) == (preset, case))
            values = {m: median(preset, case, m, key) for m in modes}
            cells = [preset, case, str(rows), *(f"{values[m]:,.1f}" for m in modes)]
            cells += [f"{values['motlab_cached'] / values[b]:.2f}x" for b in baselines]
            lines.append("| " + " | ".join(cells) + " |")
        out.append(f"rows-tokens/s by {clock} (medians)\n" + "\n".join(lines))
    return "\n\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

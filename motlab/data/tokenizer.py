"""Load a `tokenizers.Tokenizer` from a local ``tokenizer.json`` or the Hugging Face hub.

Loading is cheap (~0.1 s for GPT-2) and happens in ``C4DataModule.__init__`` so that
``vocab_size`` is known before the model is built.
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer

from motlab.hub import HubUnreachableError, check_repo, connection_errors, probe_hub

TOKENIZER_HINT = (
    "Pass a local file with `--data.tokenizer PATH/tokenizer.json` (and local data with "
    "`--data.path DIR`)."
)


def looks_like_path(name: str) -> bool:
    """Whether a tokenizer (or data) source names a file rather than a hub repository."""
    return name.endswith(".json") or os.sep in name or name.startswith((".", "~"))


def load_tokenizer(name_or_path: str, timeout: float = 30.0) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` path, a directory holding one, or a hub repo name
    (``timeout``: seconds the hub has to answer).

    Truncation and padding are switched off: documents are packed, never cut to a length here.
    """
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if os.path.isfile(path):
        try:
            tok = Tokenizer.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception with the parser's message
            raise ValueError(
                f"--data.tokenizer {path}: not a valid tokenizer.json ({e}); expected a Hugging "
                "Face `tokenizers` file such as GPT-2's tokenizer.json (truncated or another "
                "format?)"
            ) from e
    elif looks_like_path(name_or_path) or os.path.isdir(os.path.expanduser(name_or_path)):
        raise FileNotFoundError(f"--data.tokenizer: no tokenizer file at {path!r}")
    else:
        tok = _from_hub(name_or_path, timeout)
    tok.no_truncation()
    tok.no_padding()
    return tok


def _from_hub(name: str, timeout: float = 30.0) -> Tokenizer:
    """``Tokenizer.from_pretrained``, failing in seconds (not ~25 s of retries) when offline,
    and with an error that says what to do when the hub is slow, refuses access (401/403) or
    has no such repository (404: a misspelt ``--data.tokenizer``)."""
    reason = probe_hub()
    if reason is not None and "offline mode" not in reason:
        # No network: a copy in the local hub cache still works.
        try:
            from huggingface_hub import hf_hub_download

            return Tokenizer.from_file(
                hf_hub_download(name, "tokenizer.json", local_files_only=True)
            )
        except Exception as e:
            raise HubUnreachableError(
                f"cannot load tokenizer {name!r} from the Hugging Face hub: {reason}. "
                + TOKENIZER_HINT
            ) from e
    if reason is None:
        check_repo(name, "model", "--data.tokenizer", timeout, TOKENIZER_HINT)
    try:
        # In offline mode this reads the local hub cache or fails at once.
        return Tokenizer.from_pretrained(name)
    except connection_errors() as e:
        why = reason or str(e)
        raise HubUnreachableError(
            f"cannot load tokenizer {name!r} from the Hugging Face hub: {why}. " + TOKENIZER_HINT
        ) from e


def token_id(tok: Tokenizer, token: str) -> int:
    """Id of a special token such as ``<|endoftext|>``; a clear error if the vocabulary lacks it."""
    idx = tok.token_to_id(token)
    if idx is None:
        raise ValueError(
            f"the tokenizer has no {token!r} token; set --data.eot_token to its end-of-text token"
        )
    return idx

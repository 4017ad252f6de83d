"""The one shape legend of motlab: what each letter in a tensor's name means.

A tensor is named by its axes, outermost first: ``x_BTD`` is (batch, position, d_model),
``w1`` of an expert layer is (E, D, F). Every file uses these letters with these meanings only
(``tests/test_shapes.py`` checks every ``name_LETTERS`` suffix in the package against this
table); a file says which letters it uses, never what they mean.
"""

from __future__ import annotations

LEGEND: dict[str, str] = {
    "B": "batch: sequences (per device)",
    "T": "positions of a sequence",
    "U": "tokens of a data window, T + 1 (the inputs plus the shifted targets)",
    "W": "windows: rows of tokens outside a batch (data chunks, filler pools)",
    "D": "d_model, the residual width",
    "V": "vocabulary",
    "P": "padded vocabulary (V rounded up to a multiple of pad_vocab_to_multiple_of)",
    "H": "attention heads",
    "A": "width of one attention head, D / H",
    "E": "experts",
    "F": "hidden size of a feed-forward network (an expert's, or the dense layer's)",
    "G": "group size: examples of the batch mixed (MoT) or picked among (expert choice) "
    "at one position",
    "Q": "groups per position, B / G",
    "R": "groups in all, T · Q",
    "K": "top-k: experts each token chooses (token choice)",
    "C": "capacity: inputs each expert takes (token choice: per batch; expert choice: per "
    "group and position)",
    "N": "tokens of the batch, B · T",
    "S": "routing assignments, N · K",
    "M": "inputs one expert processes in the batched expert matmul",
    "L": "layers (blocks) of a model",
    "X": "slots of a key/value cache: the positions a decoding step can attend to (at most "
    "seq_len)",
    "1": "an axis of size one",
}

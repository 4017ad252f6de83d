"""Every registered variant exports to a Hugging Face directory that ``AutoModelForCausalLM``
loads as remote code, computes motlab's logits, generates motlab's tokens and reads back into
motlab bit for bit (``variant_suite.check_hf_export``)."""

from __future__ import annotations

import pytest
from variant_suite import check_hf_export

from motlab.layers import FFN_REGISTRY


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_exports_and_reloads_with_equal_logits(name, tmp_path, tokenizer_path) -> None:
    check_hf_export(name, tmp_path, tokenizer_path)

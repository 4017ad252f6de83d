"""KV-cached decoding for every registered variant: the cache computes what a full forward pass
over the same batch computes (float32, atol 1e-5), with and without left padding, compiled and
eager, and greedy generation with and without the cache gives the same tokens."""

from __future__ import annotations

import pytest
from variant_suite import (
    check_cached_decoding_matches_full_forward,
    check_decode_step_compiles,
    check_generation_cached_matches_uncached,
    check_left_padding,
)

from motlab.layers import FFN_REGISTRY


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_cached_decoding_matches_the_full_forward(name: str) -> None:
    check_cached_decoding_matches_full_forward(name)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_left_padding_changes_no_real_position(name: str) -> None:
    check_left_padding(name)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_decode_step_compiles_as_one_graph(name: str) -> None:
    check_decode_step_compiles(name)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_cached_generation_matches_uncached(name: str) -> None:
    check_generation_cached_matches_uncached(name)

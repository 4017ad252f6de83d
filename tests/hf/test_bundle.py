"""The remote code of an export is motlab's own source: the copies differ from motlab's modules
only in their import statements, import nothing but torch, transformers, the standard library
and each other, and carry only the variants the model is built of; what cannot be shipped is an
error naming the module and the import. The transformers these tests ran on is in the range
``pyproject.toml`` promises."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement
from torch import Tensor, nn

from motlab import GPT, GPTConfig
from motlab.hf.bundle import ALLOWED, MODELING, BundleError, bundle, file_name
from motlab.layers import FFN_REGISTRY, Aux, FFNConfig, FFNLayer, register_variant

REPO = Path(__file__).resolve().parents[2]


def model(ffn: dict) -> GPT:
    cfg = GPTConfig(size=None, d_model=16, d_ff=32, n_layers=2, n_heads=2, vocab_size=50,
                    seq_len=8, ffn=ffn)  # fmt: skip
    return GPT(cfg)


def without_imports(source: str) -> list[str]:
    """The lines of ``source`` outside its import statements."""
    tree = ast.parse(source)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return [line for i, line in enumerate(source.splitlines(), 1) if i not in skip]


def test_the_copies_are_motlab_source_with_only_the_imports_rewritten() -> None:
    code = bundle(model({"variant": "token_choice", "n_experts": 2}))
    assert code.variants == ["dense", "token_choice"]
    modules = {
        f"{file_name(name)}.py": name
        for name in (MODELING, "motlab.model", "motlab.kv_cache", "motlab.layers.attention",
                     "motlab.layers.token_choice", "motlab.layers.experts")
    }  # fmt: skip
    assert set(modules) <= set(code.files)
    assert "motlab_layers_mot.py" not in code.files  # only the variants the model uses
    for file, module in modules.items():
        copy = code.files[file]
        header, _, copy = copy.partition("\n")
        assert header.startswith("# motlab export: motlab/")
        if module == MODELING:  # the registration of the model's variants is appended
            copy, _, tail = copy.partition("\n\n\n# The feed-forward variants")
            assert "_register_variant('token_choice', _Config1, _Layer1)" in tail
        original = Path(importlib.util.find_spec(module).origin).read_text()
        assert without_imports(copy) == without_imports(original), file


def test_the_copies_import_only_torch_transformers_and_each_other() -> None:
    code = bundle(model({"variant": "mot", "group_size": 2, "n_experts": 2}))
    for file, source in code.files.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= ALLOWED - {"motlab"}, file
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1 and f"{node.module}.py" in code.files, (
                        file,
                        node.module,
                    )
                else:
                    assert node.module.split(".")[0] in ALLOWED - {"motlab"}, (file, node.module)


@dataclass
class SqrtConfig(FFNConfig):
    """A toy that needs numpy."""

    variant: Literal["sqrt_numpy"] = "sqrt_numpy"
    """Registry name of this variant."""


class SqrtLayer(FFNLayer):
    def __init__(self, d_model: int, d_ff: int, cfg: SqrtConfig) -> None:
        super().__init__(d_model, d_ff, cfg)
        self.w = nn.Parameter(torch.ones(d_model))

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Aux]:
        return x_BTD * self.w * float(np.sqrt(2.0)), Aux()


@pytest.fixture
def sqrt_numpy() -> Iterator[str]:
    register_variant("sqrt_numpy", SqrtConfig, SqrtLayer)
    yield "sqrt_numpy"
    del FFN_REGISTRY["sqrt_numpy"]


def test_an_import_the_export_cannot_ship_is_an_error(sqrt_numpy: str) -> None:
    with pytest.raises(BundleError, match=r"test_bundle has `import numpy`: .* only torch"):
        bundle(model({"variant": sqrt_numpy}))


def test_the_installed_transformers_is_in_the_promised_range() -> None:
    found = re.search(r'^hf = \["([^"]+)"\]', (REPO / "pyproject.toml").read_text(), re.M)
    assert found, "pyproject.toml has no hf extra"
    spec = Requirement(found.group(1))
    assert spec.name == "transformers"
    assert importlib.metadata.version("transformers") in spec.specifier

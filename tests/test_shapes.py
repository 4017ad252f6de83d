"""One shape legend: every `name_LETTERS` tensor name in the package uses the legend's letters."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from motlab.shapes import LEGEND

PACKAGE = Path(__file__).resolve().parents[1] / "motlab"
SHAPED = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*_([A-Z0-9]+)$")


def _shaped_names(path: Path) -> set[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {t.string for t in tokens if t.type == tokenize.NAME and SHAPED.match(t.string)}


def test_every_shape_suffix_uses_the_legend() -> None:
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _shaped_names(path):
            letters = SHAPED.match(name).group(1)  # type: ignore[union-attr]
            unknown = sorted(set(letters) - set(LEGEND))
            if unknown:
                bad[f"{path.relative_to(PACKAGE)}:{name}"] = unknown
    assert not bad, f"shape letters not in motlab.shapes.LEGEND: {bad}"


def test_no_file_defines_a_legend_of_its_own() -> None:
    own = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "shapes.py" and re.search(r"[Ss]hape legend", p.read_text())
    ]
    assert not own, f"files defining their own shape legend (refer to motlab.shapes): {own}"


def test_the_scan_finds_names() -> None:
    names = _shaped_names(PACKAGE / "layers" / "mot.py")
    assert {"x_BTD", "weights_RGE", "y_ERD"} <= names

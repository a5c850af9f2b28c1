"""``payhub.testing.write_distribution``: a test distribution written where a ``str`` or a path-like names."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import distributions
from pathlib import Path

import pytest

from payhub.testing import write_distribution


class _PathLike:
    """An ``os.PathLike`` that is not a ``Path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


@pytest.mark.parametrize("as_", [str, Path, _PathLike], ids=["str", "Path", "PathLike"])
def test_the_directory_may_be_a_str_or_a_path_like(tmp_path: Path,
                                                   as_: Callable[[str], str | os.PathLike[str]]) -> None:
    site = write_distribution(as_(str(tmp_path / "site")), "acme-test",
                              "[payhub.rails]\nfake = payhub.testing:FakeRail\n", modules={"acme_mod": "X = 1\n"})
    assert site == tmp_path / "site" and isinstance(site, Path)
    assert (site / "acme_mod.py").read_text() == "X = 1\n"
    [dist] = distributions(path=[str(site)])
    assert (dist.metadata["Name"], dist.version) == ("acme-test", "1.0")
    assert [ep.value for ep in dist.entry_points] == ["payhub.testing:FakeRail"]

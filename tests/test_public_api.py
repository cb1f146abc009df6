"""Every package's ``__all__`` lists exactly what it exports, and all of it imports."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import broker


def _packages() -> list[str]:
    names = ["broker"]
    for info in pkgutil.walk_packages(broker.__path__, "broker."):
        if info.ispkg:
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _packages())
def test_all_matches_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    exported = set(module.__all__)
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public <= exported, f"{name} exports names missing from __all__: {public - exported}"


def test_private_modules_start_with_an_underscore() -> None:
    for info in pkgutil.walk_packages(broker.__path__, "broker."):
        leaf = info.name.rsplit(".", 1)[-1]
        if not info.ispkg and leaf not in {"errors", "__main__"}:
            assert leaf.startswith("_"), f"{info.name} should be private (_{leaf}) and re-exported"


def test_pure_modules_do_not_import_anyio() -> None:
    pure = [
        f"broker.metadata.{leaf}"
        for leaf in (
            "_records",
            "_codec",
            "_maps",
            "_image",
            "_delta",
            "_refcount",
            "_features",
            "_cluster",
            "_topics",
            "_configs",
            "_security",
            "_streams",
        )
    ]
    for name in pure:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        with open(module.__file__, encoding="utf-8") as source:
            text = source.read()
        assert "import anyio" not in text, name
        assert "from anyio" not in text, name

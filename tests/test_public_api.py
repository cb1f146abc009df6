"""The public API: what each package exports, that it is documented, and what it loads."""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import itertools
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import broker


def _packages() -> list[str]:
    names = ["broker"]
    for info in pkgutil.walk_packages(broker.__path__, "broker."):
        if info.ispkg:
            names.append(info.name)
    return names


PACKAGES = _packages()


@pytest.mark.parametrize("name", PACKAGES)
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


def _documented_assignments(package: types.ModuleType) -> set[str]:
    """Module-level names assigned in the package's own files and followed by a string
    (an attribute docstring, which the interpreter does not keep)."""
    documented: set[str] = set()
    directory = Path(package.__file__ or "").parent
    for path in directory.glob("*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, following in itertools.pairwise(body):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            documented_by_next = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
            if documented_by_next:
                documented.update(t.id for t in targets if isinstance(t, ast.Name))
    return documented


def _own_docstring(obj: object) -> str | None:
    doc = obj.__doc__ if isinstance(obj, type) else inspect.getdoc(obj)
    if not doc:
        return None
    name = getattr(obj, "__name__", "")
    generated = (f"{name}(", "An enumeration.", "Create a collection of name/value pairs.")
    return None if doc.startswith(generated) else doc


def _undocumented() -> list[str]:
    missing: list[str] = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        assigned = _documented_assignments(package)
        for name in package.__all__:
            if name == "__version__":
                continue
            obj = getattr(package, name)
            if isinstance(obj, type) or (callable(obj) and not isinstance(obj, enum.Enum)):
                if _own_docstring(obj) is None and name not in assigned:
                    missing.append(f"{package_name}.{name}")
            elif name not in assigned:
                missing.append(f"{package_name}.{name}")
    return sorted(set(missing))


def test_every_public_name_has_a_docstring() -> None:
    assert _undocumented() == []


def _member_docstring(cls: type, name: str) -> str | None:
    """The docstring of ``cls.name``: its own, or the one it overrides."""
    for owner in cls.__mro__:
        found = vars(owner).get(name)
        if isinstance(found, property):
            found = found.fget
        elif isinstance(found, classmethod | staticmethod):
            found = found.__func__
        if found is not None and getattr(found, "__doc__", None):
            return str(found.__doc__)
    return None


def _undocumented_members() -> list[str]:
    missing: list[str] = []
    seen: set[int] = set()
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for name in package.__all__:
            cls = getattr(package, name)
            if not isinstance(cls, type) or id(cls) in seen:
                continue
            seen.add(id(cls))
            for member_name, member in vars(cls).items():
                function = member.fget if isinstance(member, property) else member
                if isinstance(function, classmethod | staticmethod):
                    function = function.__func__
                if member_name.startswith("_") or not inspect.isfunction(function):
                    continue
                if _member_docstring(cls, member_name) is None:
                    missing.append(f"{package_name}.{name}.{member_name}")
    return sorted(missing)


def test_every_public_method_and_property_has_a_docstring() -> None:
    assert _undocumented_members() == []


# structlog imports rich when it is installed; making it unimportable shows that our
# code does not need it (an import of it would fail), whoever else would load it.
_WITHOUT_RICH = "import sys, json; sys.modules['rich'] = None; "


def _loaded_after(statements: str, roots: set[str]) -> list[str]:
    code = (
        f"{_WITHOUT_RICH}{statements}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.integration
def test_the_image_core_loads_no_event_loop_nor_io_client() -> None:
    """Importing the pure core in a fresh interpreter loads neither anyio nor the etcd
    client nor the CLI's display: the purity a grep of the source could not prove."""
    imports = "import broker.metadata, broker.metadata.records"
    assert _loaded_after(imports, {"anyio", "sniffio", "grpc", "aetcd"}) == []


@pytest.mark.integration
def test_the_pipeline_and_cache_load_no_etcd_client() -> None:
    imports = "import broker; broker.MetadataPipeline; broker.MetadataCache; broker.FileRecordLog"
    assert _loaded_after(imports, {"grpc", "aetcd"}) == []

"""The wheel a user installs: built from this checkout, installed into a fresh venv
without extras, imported without grpc or rich, type-checked by an embedding app, and
broker-sim run with [cli]."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "quickstart.py"
"""The embedding app users copy from: run and type-checked against the installed wheel."""


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=check, cwd=ROOT, timeout=600
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv's python, the wheel), the package installed without extras."""
    where = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", where / "dist", ROOT)
    [wheel] = (where / "dist").glob("kraft_metadata_pipeline-*.whl")
    venv.EnvBuilder(with_pip=True).create(where / "venv")
    python = where / "venv" / "bin" / "python"
    pip = (python, "-m", "pip", "--disable-pip-version-check", "-q")
    run(*pip, "install", "-c", ROOT / "constraints.txt", wheel)
    return python, wheel


def test_the_core_install_imports_without_grpc_or_rich(installed: tuple[Path, Path]) -> None:
    python, _ = installed
    code = (
        "import sys, broker, broker.metadata, broker.cache, broker.server; "
        "broker.MetadataPipeline; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'aetcd', 'rich', "
        "'prometheus_client'}))"
    )
    assert run(python, "-c", code).stdout.strip() == "[]"
    listed = run(python, "-m", "pip", "list", "--format=freeze").stdout.lower()
    assert "grpcio" not in listed
    assert "rich" not in listed
    done = run(python, APP)
    assert done.stdout.strip().splitlines()[-1] == "{'orders': [1]}"


def test_an_embedding_app_type_checks_against_the_installed_package(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    python, _ = installed
    run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", "mypy")
    app = tmp_path / "app.py"
    app.write_text(APP.read_text())
    checked = run(python, "-m", "mypy", "--strict", "--no-incremental", app, check=False)
    assert checked.returncode == 0, checked.stdout
    # ... and it catches what a user gets wrong: a lease that was never awaited.
    app.write_text(
        APP.read_text().replace(
            "with await cache.wait_for_offset(2) as image:",
            "with cache.wait_for_offset(2) as image:",
        )
    )
    wrong = run(python, "-m", "mypy", "--strict", "--no-incremental", app, check=False)
    assert wrong.returncode == 1
    assert "Coroutine" in wrong.stdout


def test_broker_sim_runs_with_the_cli_extra(installed: tuple[Path, Path]) -> None:
    python, wheel = installed
    run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", f"{wheel}[cli]")
    sim = python.parent / "broker-sim"
    done = run(sim, "--duration", "5", "--no-live", "--clients", "5", check=False)
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout

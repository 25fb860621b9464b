"""The package builds without warnings from our metadata and carries what Airflow's providers carry."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_clean_with_provider_metadata(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    # the machine's pip configuration may warn about its own index locations; nothing else may warn
    noise = [line for line in proc.stderr.splitlines() if line.strip() and "Location 'file:" not in line]
    assert not [line for line in noise if "warn" in line.lower() or "deprecat" in line.lower()], noise
    [wheel] = tmp_path.glob("airflow_provider_panda-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "airflow_provider_panda/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Framework :: Apache Airflow :: Provider" in metadata
    assert "provider_info = airflow_provider_panda:get_provider_info" in entry_points
    floor = next(line for line in metadata.splitlines() if line.startswith("Requires-Dist: apache-airflow>="))
    version = floor.split(">=")[1]
    assert (ROOT / "constraints" / f"airflow-{version}.txt").exists(), "the floor must have its CI pins"


# --- every runtime import declared -------------------------------------------------------------

PACKAGE = ROOT / "airflow_provider_panda"
#: Top-level names that Airflow's own distributions share (apache-airflow-core, -task-sdk, providers).
AIRFLOW_NAMESPACE = "airflow"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(specs: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(req.name): req for req in map(Requirement, specs)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> set[str]:
    """The top-level names a module imports when it runs: every absolute import, at module level or
    inside a function, except those under ``if TYPE_CHECKING:``."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names - set(sys.stdlib_module_names) - {"__future__", "airflow_provider_panda"}


def _undeclared(modules: list[Path], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for path in modules:
        for name in sorted(_runtime_imports(ast.parse(path.read_text(), str(path)))):
            if name == AIRFLOW_NAMESPACE:
                continue  # apache-airflow is declared, and its namespace is Airflow's to fill
            dists = {canonicalize_name(d) for d in distributions.get(name, [])}
            if not dists & declared:
                where = path.relative_to(ROOT)
                problems.append(f"{where} imports {name!r} (distribution {sorted(dists) or 'unknown'}) undeclared")
    return problems


def test_every_runtime_import_is_declared() -> None:
    """The provider's modules import only what ``dependencies`` declares; the local server (testing/)
    only that and the ``local-server`` extra. Nothing may arrive only because Airflow happens to pull it."""
    project = _pyproject()["project"]
    dependencies = set(_requirements(project["dependencies"]))
    server = dependencies | set(_requirements(project["optional-dependencies"]["local-server"]))
    testing = PACKAGE / "testing"
    modules = sorted(PACKAGE.rglob("*.py"))
    provider = [p for p in modules if testing not in p.parents]
    local_server = [p for p in modules if testing in p.parents]
    assert provider and local_server
    assert _undeclared(provider, dependencies) == []
    assert _undeclared(local_server, server) == []


def test_declared_floors_admit_the_oldest_airflow_pins() -> None:
    """Every floor (dependencies and the local-server extra) is met by the oldest Airflow's pins, so
    ``make test-oldest`` installs what users of that release have."""
    project = _pyproject()["project"]
    requirements = _requirements([*project["dependencies"], *project["optional-dependencies"]["local-server"]])
    oldest = requirements["apache-airflow"].specifier
    [floor] = [spec.version for spec in oldest if spec.operator == ">="]
    pins = {}
    for line in (ROOT / "constraints" / f"airflow-{floor}.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[canonicalize_name(name.strip())] = version.strip()
    for name, requirement in requirements.items():
        assert name in pins, f"{name} has no pin in constraints/airflow-{floor}.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement} excludes {pins[name]}, the version Airflow {floor} is tested with")


@pytest.mark.parametrize("module", ["starlette", "uvicorn", "jwt"])
def test_local_server_without_its_extra_says_how_to_install_it(module: str) -> None:
    """Without the ``local-server`` extra, importing the server names the extra to install."""
    blocked = f"import sys; sys.modules[{module!r}] = None; import airflow_provider_panda.testing.server"
    proc = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "pip install 'airflow-provider-panda[local-server]'" in proc.stderr


# --- only public Airflow APIs, shims in compat.py ----------------------------------------------

#: Airflow modules any module may import from: the task SDK's public namespace, and the modules
#: Airflow documents for what they hold (custom @task decorators, triggers, provider packages).
PUBLIC_AIRFLOW = ("airflow.sdk", "airflow.sdk.bases.decorator", "airflow.triggers.base")
COMPAT = PACKAGE / "compat.py"


def _airflow_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "airflow" or name.startswith("airflow.")]


def test_airflow_is_imported_only_from_public_modules_or_compat() -> None:
    """Outside compat.py, Airflow names come from public modules only: no ``airflow.exceptions``,
    ``airflow.utils``, ``airflow.models``, ``airflow.configuration``, ``airflow.sdk.execution_time`` or
    ``airflow.sdk.definitions`` (private or moved between releases); compat.py says why for each."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == COMPAT:
            continue
        for line, name in _airflow_imports(ast.parse(path.read_text(), str(path))):
            if name not in PUBLIC_AIRFLOW and not name.startswith("airflow.providers."):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name} (use compat.py)")
    assert problems == []


def test_import_shims_live_in_compat_only() -> None:
    """``try: import ... except ImportError`` (a version shim) only in compat.py; the local server's
    check for its extra is the one other ImportError handler."""
    allowed = {COMPAT, PACKAGE / "testing" / "server.py"}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                if caught & {"ImportError", "ModuleNotFoundError"}:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} catches {sorted(caught)}")
    assert problems == []

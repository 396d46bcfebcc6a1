"""Packaging promises, checked wherever the suite runs (every tox environment included).

* The core (the package, the CLI, the pytest plugin) imports no HTTP library, and works without
  h11; the sandbox imports only h11 (its ``[sandbox]`` extra, a framing library, no client).
  trustme (the extra's other library) is imported only for ``Sandbox(tls=True)``, which without
  it raises an ``ImportError`` naming the extra; everything else works without it.
* An adapter whose library is missing fails to import with an ``ImportError`` that names the
  extra to install. Where the library really is absent (the ``core`` tox environment) that is
  checked in this process; everywhere, a subprocess blocks the library's import to check it.
* ``py.typed`` ships, and the version lives in one place (``navro_adapters/_version.py``).
* The floors in ``pyproject.toml``'s extras are the versions tox's ``*-min`` environments pin.
"""

from __future__ import annotations

import configparser
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

import navro_adapters

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(navro_adapters.__file__).resolve().parent
DISTRIBUTION = "navro-adapters"
SUBPROCESS_TIMEOUT = 120  # seconds; generous for a loaded 2-core CI machine

#: Top-level modules of the HTTP client stacks (and the libraries they are built on) that the
#: core and the sandbox must never import: installing navro-adapters alone pulls in none of them.
HTTP_CLIENT_MODULES = frozenset(
    {
        "aiohttp",
        "anyio",
        "authlib",
        "h2",
        "httpcore",
        "httpcore2",
        "httpx",
        "httpx2",
        "multidict",
        "niquests",
        "redis",
        "requests",
        "urllib3",
        "urllib3_future",
        "yarl",
    }
)
#: The libraries an extra installs; the ``core`` tox environment must have none of them.
EXTRA_LIBRARIES = ("aiohttp", "authlib", "httpx", "httpx2", "niquests", "redis", "requests")

#: The sandbox's HTTP/1.1 framing library: its ``[sandbox]`` extra, not an HTTP client.
SANDBOX_LIBRARY = "h11"
SANDBOX_MODULE = "navro_adapters.sandbox"
#: The sandbox's certificate library (HTTPS only), and what it brings along.
TLS_LIBRARIES = frozenset({"trustme", "cryptography"})

#: The modules a user may import without any extra installed, h11 included.
CORE_MODULES = ("navro_adapters", "navro_adapters.cli", "navro_adapters.testing")


@dataclass(frozen=True)
class Adapter:
    """One adapter module and what it needs."""

    module: str
    #: Each group must have at least one importable member: ``(("httpx", "httpx2"),)``.
    needs: Tuple[Tuple[str, ...], ...]
    #: What a subprocess blocks so that the import must fail.
    blocked: Tuple[str, ...]
    #: The extra its error message must name.
    extra: str

    @property
    def missing(self) -> bool:
        return any(all(not installed(name) for name in group) for group in self.needs)


ADAPTERS = (
    Adapter("navro_adapters.requests", (("requests",),), ("requests",), "requests"),
    Adapter("navro_adapters.httpx", (("httpx", "httpx2"),), ("httpx", "httpx2"), "httpx"),
    Adapter("navro_adapters.aiohttp", (("aiohttp",),), ("aiohttp",), "aiohttp"),
    Adapter("navro_adapters.niquests", (("niquests",),), ("niquests",), "niquests"),
    Adapter(
        "navro_adapters.authlib",
        (("authlib",), ("requests",), ("httpx",)),
        ("authlib",),
        "authlib",
    ),
)


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a blocked or half-imported module
        return False


def run_python(script: str, *args: str) -> Any:
    """Run ``script`` in a fresh interpreter importing this same copy of navro_adapters and
    return the JSON it prints last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_DIR.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_names_extra(message: str, extra: str) -> None:
    assert f"navro-adapters[{extra}]" in message, message
    assert "pip install" in message, message


# -- the core imports no HTTP library ---------------------------------------------------------

_LOADED_MODULES = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_http_library(module: str) -> None:
    loaded = set(run_python(_LOADED_MODULES, module))
    assert module.partition(".")[0] in loaded
    forbidden = HTTP_CLIENT_MODULES | {SANDBOX_LIBRARY} | TLS_LIBRARIES
    assert not loaded & forbidden, f"{module} imported {sorted(loaded & forbidden)}"


def test_sandbox_imports_h11_and_no_http_client() -> None:
    if not installed(SANDBOX_LIBRARY):
        pytest.skip("h11 is not installed here")
    loaded = set(run_python(_LOADED_MODULES, SANDBOX_MODULE))
    assert SANDBOX_LIBRARY in loaded
    clients = loaded & (HTTP_CLIENT_MODULES | TLS_LIBRARIES)
    assert not clients, f"{SANDBOX_MODULE} imported {sorted(clients)}"


@pytest.mark.skipif(
    not os.environ.get("NAVRO_EXPECT_NO_HTTP_LIBRARY"),
    reason="only where no extra but [sandbox] is installed (tox -e core)",
)
def test_no_extra_library_is_installed() -> None:
    # The core environment proves the core needs no HTTP client only if none leaked in; h11
    # (the [sandbox] extra) is there so the sandbox tests run, and is no client.
    assert [name for name in EXTRA_LIBRARIES if installed(name)] == []
    assert [name for name in HTTP_CLIENT_MODULES if installed(name)] == []
    assert installed(SANDBOX_LIBRARY)


# -- OpenTelemetry is optional: imported only when a provider is built, never required --------

OTEL_MODULE = "opentelemetry"

_WITHOUT_OPENTELEMETRY = """
import json, sys
sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
from navro_adapters import ConfigurationError, TokenProvider
from navro_adapters.sandbox import Sandbox
events = []
with Sandbox() as sandbox:
    provider = TokenProvider(sandbox.credentials(), on_event=events.append)
    token = provider.get_token()
    provider.invalidate(token)
    provider.get_token()
    refused = {}
    for name in ("tracer_provider", "meter_provider"):
        try:
            TokenProvider(sandbox.credentials(), **{name: object()})
        except ConfigurationError as exc:
            refused[name] = str(exc)
print(json.dumps({"kinds": [event.kind for event in events], "refused": refused}))
"""


def test_without_opentelemetry_tokens_and_events_work_and_its_options_name_the_extra() -> None:
    if not installed(SANDBOX_LIBRARY):
        pytest.skip("h11 is not installed here")
    outcome = run_python(_WITHOUT_OPENTELEMETRY)
    assert outcome["kinds"] == ["fetched", "invalidated", "fetched"]
    assert sorted(outcome["refused"]) == ["meter_provider", "tracer_provider"]
    for message in outcome["refused"].values():
        assert_names_extra(message, "otel")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_importing_the_core_does_not_import_opentelemetry(module: str) -> None:
    assert OTEL_MODULE not in set(run_python(_LOADED_MODULES, module))


# -- an adapter without its library says which extra to install ------------------------------

_IMPORT_BLOCKED = """
import importlib, json, sys
module, blocked = sys.argv[1], json.loads(sys.argv[2])
for name in blocked:
    sys.modules[name] = None  # makes "import name" (and its submodules) raise ImportError
try:
    importlib.import_module(module)
except ImportError as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps(None))
"""


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.extra)
def test_adapter_without_its_library_names_the_extra(adapter: Adapter) -> None:
    failure = run_python(_IMPORT_BLOCKED, adapter.module, json.dumps(adapter.blocked))
    assert failure is not None, f"{adapter.module} imported with {adapter.blocked} blocked"
    assert_names_extra(failure["message"], adapter.extra)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.extra)
def test_adapter_whose_library_is_absent_names_the_extra(adapter: Adapter) -> None:
    if not adapter.missing:
        pytest.skip(f"{adapter.module}: its library is installed here")
    with pytest.raises(ImportError) as failure:
        importlib.import_module(adapter.module)
    assert_names_extra(str(failure.value), adapter.extra)


def test_sandbox_without_h11_names_the_extra() -> None:
    failure = run_python(_IMPORT_BLOCKED, SANDBOX_MODULE, json.dumps([SANDBOX_LIBRARY]))
    assert failure is not None, f"{SANDBOX_MODULE} imported with h11 blocked"
    assert failure["type"] == "ImportError"
    assert_names_extra(failure["message"], "sandbox")


_TLS_WITHOUT_TRUSTME = """
import json, sys
sys.modules["trustme"] = None  # as if it were not installed
from navro_adapters.sandbox import Sandbox
with Sandbox() as plain:  # plain HTTP needs no trustme
    plain.stats()
try:
    Sandbox(tls=True)
except ImportError as exc:
    print(json.dumps({"name": exc.name, "message": str(exc)}))
else:
    print(json.dumps(None))
"""


def test_sandbox_tls_without_trustme_names_the_extra() -> None:
    if not installed(SANDBOX_LIBRARY):
        pytest.skip("h11 is not installed here")
    failure = run_python(_TLS_WITHOUT_TRUSTME)
    assert failure is not None, "Sandbox(tls=True) was built without trustme"
    assert failure["name"] == "trustme"
    assert_names_extra(failure["message"], "sandbox")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_h11(module: str) -> None:
    assert run_python(_IMPORT_BLOCKED, module, json.dumps([SANDBOX_LIBRARY])) is None


_REDIS_BLOCKED = """
import json, sys
if sys.argv[1] == "block":
    sys.modules["redis"] = None
from navro_adapters.stores import RedisStore  # importable without redis-py, by design
try:
    RedisStore("redis://127.0.0.1:1/0")
except ImportError as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps(None))
"""


@pytest.mark.parametrize("how", ["block", "as-installed"])
def test_redis_store_without_redis_py_names_the_extra(how: str) -> None:
    if how == "as-installed" and installed("redis"):
        pytest.skip("redis-py is installed here")
    failure = run_python(_REDIS_BLOCKED, how)
    assert failure is not None, "RedisStore was built without redis-py"
    assert_names_extra(failure["message"], "redis")


# -- py.typed and the version -----------------------------------------------------------------


def installed_distribution() -> metadata.Distribution:
    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{DISTRIBUTION} is not installed (pip install -e .)")


def is_editable(distribution: metadata.Distribution) -> bool:
    direct_url = distribution.read_text("direct_url.json")
    if not direct_url:
        return False
    return bool(json.loads(direct_url).get("dir_info", {}).get("editable", False))


def test_py_typed_ships() -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()
    distribution = installed_distribution()
    if is_editable(distribution):
        # An editable install maps the source tree; what goes into the wheel is the config.
        pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
        assert re.search(r'^navro_adapters\s*=\s*\[[^\]]*"py\.typed"', pyproject, re.M)
        return
    files = {str(path).replace("\\", "/") for path in distribution.files or ()}
    assert "navro_adapters/py.typed" in files
    assert Path(str(distribution.locate_file("navro_adapters/py.typed"))).is_file()


def test_version_is_the_distributions() -> None:
    assert navro_adapters.__version__ == installed_distribution().version


def test_version_is_written_in_one_place() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', pyproject, re.M)
    assert not re.search(r"^version\s*=\s*[\"']", pyproject, re.M), "a literal version"
    assigned = sorted(
        path.relative_to(PACKAGE_DIR).as_posix()
        for path in PACKAGE_DIR.rglob("*.py")
        if re.search(r"^__version__\s*=", path.read_text(encoding="utf-8"), re.M)
    )
    assert assigned == ["_version.py"]


def test_changelog_names_this_version() -> None:
    changelog = REPO_ROOT / "CHANGELOG.md"
    if not changelog.is_file():
        pytest.skip("no CHANGELOG.md next to the tests")
    releases = re.findall(r"^## \[(\d[^\]]*)\]", changelog.read_text(encoding="utf-8"), re.M)
    assert releases, "CHANGELOG.md has no release heading"
    assert releases[0] == navro_adapters.__version__


# -- declared floors match the environments that prove them -----------------------------------


def version_key(version: str) -> Tuple[int, ...]:
    """``"2.25"`` and ``"2.25.0"`` compare equal."""
    parts = [int(part) for part in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def optional_dependencies(pyproject: str) -> Dict[str, List[str]]:
    """``[project.optional-dependencies]`` as ``{extra: [requirement, ...]}`` (no TOML parser
    on Python 3.9; the table is written one array per extra)."""
    section = re.search(
        r"^\[project\.optional-dependencies\]\s*$(.*?)(?=^\[)", pyproject, re.M | re.S
    )
    assert section, "pyproject.toml has no [project.optional-dependencies]"
    return {
        match.group(1): re.findall(r'"([^"]+)"', match.group(2))
        for match in re.finditer(r"^([\w-]+)\s*=\s*\[(.*?)\]", section.group(1), re.M | re.S)
    }


def floors_in(requirements: Sequence[str]) -> Dict[str, Optional[str]]:
    floors: Dict[str, Optional[str]] = {}
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*(.*)", requirement)
        assert match, requirement
        lower = re.search(r">=\s*([0-9][0-9.]*)", match.group(2))
        floors[match.group(1).lower()] = lower.group(1) if lower else None
    return floors


def test_extras_declare_the_floors_tox_tests() -> None:
    tox_ini = REPO_ROOT / "tox.ini"
    if not tox_ini.is_file():
        pytest.skip("no tox.ini next to the tests")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(tox_ini, encoding="utf-8")
    tested = dict(parser["floors"])
    extras = optional_dependencies((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    seen = set()
    for extra, requirements in extras.items():
        for name, floor in floors_in(requirements).items():
            if name not in tested:
                continue
            seen.add(name)
            assert floor is not None, f"[{extra}] {name} has no floor; tox tests {tested[name]}"
            assert version_key(floor) == version_key(tested[name]), (
                f"[{extra}] declares {name}>={floor} but tox's [floors] tests {tested[name]}"
            )
    assert seen == set(tested), f"floors no extra declares: {sorted(set(tested) - seen)}"

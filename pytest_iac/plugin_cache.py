"""The lock around the provider plugin cache that every `init` of every run shares.

Terraform's plugin cache is not safe for concurrent installs (hashicorp/terraform#31964):
an install first removes what is at the provider's place in the cache, then writes it anew,
so an init that installs a provider while another links or hashes the same one breaks the
other (or leaves a half-written package). Every init that uses the cache therefore holds a
file lock in it: exclusive when it may install into the cache, shared when it provably only
reads it. Inits that only link cached providers, each verifying the package's checksum
(about 1.5 s of CPU for hashicorp/aws), run at once; an install still runs alone, and no
init reads the cache while one writes it. That is what keeps #31964 closed: the cache
only ever changes under the exclusive lock.

When does an init only read the cache? Terraform's installer (1.4 and later, also OpenTofu)
selects for each provider the version in the dependency lock file (without `-upgrade`),
then, if the cache holds that version for its platform and the CLI configuration says
`plugin_cache_may_break_dependency_lock_file` (pytest-iac's does), links the cached package
and installs nothing. So an init is shared only when all of this is known to hold (else
`may_install()` says why not, and the lock is exclusive):

- its arguments are the ones pytest-iac gives (no `-upgrade`, no `-plugin-dir`), and no
  `TF_PLUGIN_CACHE_*` variable changes the cache it uses;
- every file of the module and of the local modules it calls was read (`tfconfig`), none of
  them calls a module from a registry or repository (its providers are unknown before it is
  downloaded), and there are no test files (`*.tftest.hcl`: init installs what they use);
- every provider they use (the built-in `terraform` aside) is pinned in the directory's
  `.terraform.lock.hcl`, and `<cache>/<host>/<namespace>/<type>/<version>/<platform>/`
  exists for the engine's own platform (`terraform version -json`).

No pytest import here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from pytest_iac import tfconfig

log = logging.getLogger("pytest_iac")

LOCK = ".pytest-iac.lock"
_BUILTIN = "terraform.io/builtin/terraform"
_PLAIN_ARGS = ("-no-color", "-input=false", "-reconfigure")  # what pytest-iac's inits pass


def may_install(
    cache: Path,
    module_dir: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    platform: Callable[[], str],
) -> str | None:
    """Why `init ARGS` in `module_dir` may install into the plugin cache `cache`, or None
    when it provably only reads it (see the module documentation). `platform` gives the
    engine's platform, asked only when the rest holds."""
    for arg in args[1:]:
        if arg not in _PLAIN_ARGS and not arg.startswith("-backend-config="):
            return f"init {arg}"
    if changed := sorted(k for k in env if k.startswith("TF_PLUGIN_CACHE")):
        return f"{changed[0]} is set"
    if any(module_dir.glob("*.tftest.*")) or any(module_dir.glob("tests/*.tftest.*")):
        return "test files (init installs what they use)"
    used: set[str] = set()
    for directory, module in tfconfig.read_closure(module_dir).items():
        if module.unreadable:
            return f"{module.unreadable[0]}"
        remote = [c.name for c in module.module_calls.values() if not c.is_local]
        if remote:
            return f'module "{remote[0]}" in {directory} is not local'
        used.update(module.providers.values())
    locked = tfconfig.locked_providers(module_dir)
    if locked is None:
        return f"{tfconfig.LOCK_FILE} could not be read"
    cached_for = None
    for address in sorted(used - {_BUILTIN}):
        if address not in locked:
            return f"{address} is not pinned in {tfconfig.LOCK_FILE}"
        cached_for = cached_for or platform()
        if not (cache / address / locked[address] / cached_for).is_dir():
            return f"{address} {locked[address]} ({cached_for}) is not in the plugin cache"
    return None


@contextlib.contextmanager
def init_lock(
    cache: Path,
    module_dir: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    platform: Callable[[], str],
) -> Iterator[None]:
    """Hold the cache's lock for `init ARGS` in `module_dir`: shared when it only reads the
    cache, else exclusive."""
    with (cache / LOCK).open("a") as lock:
        # Decided under the shared lock: no install is under way while the cache is looked at.
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            why = may_install(cache, module_dir, args, env, platform)
            if why is not None:
                log.debug("init in %s locks the plugin cache alone: %s", module_dir, why)
                # flock converts by unlocking first: no deadlock between two that convert.
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

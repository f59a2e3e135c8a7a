"""Providers that cannot be installed here: no mirror holds them and their registry is down.

Terraform reports a registry it cannot reach the way it reports a network blip, and a blip
is worth retrying. A machine without network is not: `unavailable()` tells them apart with
one connection attempt to the registry, so a run says at once what to do instead of
retrying. No pytest import here.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from pathlib import Path

DEFAULT_REGISTRY = "registry.terraform.io"

# What `init` prints when it cannot reach a provider's registry (wrapped at any space).
_QUERY_FAILED = re.compile(
    r"Could not retrieve the list of available versions for provider\s+(\S+?):\s+"
    r"could not connect to\s+(\S+?):",
)


def unreachable(host: str, timeout: float = 3.0) -> str | None:
    """Why `host` cannot be reached over HTTPS, or None when it can."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        return str(error) or type(error).__name__
    return None


def mirrored(provider: str, mirrors: Sequence[Path]) -> bool:
    """Does a filesystem mirror hold `provider` (`hashicorp/aws` or with its host)?"""
    address = provider if provider.count("/") == 2 else f"{DEFAULT_REGISTRY}/{provider}"
    return any((mirror / address).is_dir() for mirror in mirrors)


def explain(provider: str, mirrors: Sequence[Path], host: str, why: str) -> str:
    """What to do about a provider that no mirror holds and whose registry is unreachable."""
    searched = ", ".join(str(m) for m in mirrors) or "none configured"
    return (
        f"the {provider} provider cannot be installed: no provider mirror holds it "
        f"(mirrors checked: {searched}) and {host} is unreachable ({why}). Make a mirror "
        f"where there is network (`terraform providers mirror DIR` in a module that requires "
        f"{provider}) and pass --iac-provider-mirror=DIR (or PYTEST_IAC_PROVIDER_MIRROR=DIR), "
        "or run with network access."
    )


def unavailable(output: str, mirrors: Sequence[Path]) -> str | None:
    """For a failed `init`'s output: the explanation when a provider cannot be installed
    offline (not a blip: the registry does not answer now either), else None."""
    found = _QUERY_FAILED.search(output)
    if found is None:
        return None
    provider, host = found.group(1), found.group(2)
    if mirrored(provider, mirrors):
        return None
    why = unreachable(host)
    return None if why is None else explain(provider, mirrors, host, why)

"""What pytest-iac says when a test uses it wrong, or a shared deployment failed. No pytest.

Each message names what to do: the keyword meant, the fixture to use, the error to read.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any


def unexpected_keyword(called: str, given: Mapping[str, Any], options: Sequence[str]) -> TypeError:
    """The TypeError Python would raise, naming the keyword meant: `var=` -> `vars=`."""
    name = next(iter(given))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    known = ", ".join(f"`{o}=`" for o in options)
    hint = f": did you mean `{close[0]}=`?" if close else f"; it takes {known}"
    return TypeError(f"{called}() got an unexpected keyword argument {name!r}{hint}")


_FAILED_DEPLOYMENT = "_pytest_iac_failed_deployment"  # set on the error of a failed deploy
_SHOWN = "_pytest_iac_shown"


def failed_deployment(error: BaseException, what: str | None = None) -> str | None:
    """Mark `error` as the failure of the deployment `what`; either way, the one marked."""
    if what is not None:
        setattr(error, _FAILED_DEPLOYMENT, what)
    found = getattr(error, _FAILED_DEPLOYMENT, None)
    return str(found) if found is not None else None


def repeated_failure(error: BaseException) -> str | None:
    """The line that replaces a failed deployment's error when pytest shows it again.

    pytest re-raises a shared fixture's error in every test of its scope; its diagnostic
    (terraform's, up to 30 lines) is worth reading once.
    """
    deployment = getattr(error, _FAILED_DEPLOYMENT, None)
    if deployment is None:
        return None
    if not getattr(error, _SHOWN, False):
        setattr(error, _SHOWN, True)
        return None
    return f"setup of deployment {deployment} failed (see the first error)"


_SCOPE_MISMATCH = re.compile(
    r"ScopeMismatch: You tried to access the function scoped fixture (iac_deploy|iac_name|"
    r"iac_plan) with a (\w+) scoped request object"
)


def scope_advice(message: str) -> str | None:
    """What to use instead, when a shared fixture asked for a function-scoped one of ours."""
    found = _SCOPE_MISMATCH.search(message)
    if found is None:
        return None
    fixture, scope = found.groups()
    if fixture != "iac_deploy":
        return (
            f"pytest-iac: {fixture} is made for one test; a {scope}-scoped fixture cannot use "
            "it (deploy with iac_module_deploy or iac_session_deploy)."
        )
    instead = "iac_session_deploy" if scope in ("session", "package") else "iac_module_deploy"
    return (
        f"pytest-iac: iac_deploy destroys after each test. In a {scope}-scoped fixture, deploy "
        f"with\n{instead} (destroyed when the {scope} ends), or use "
        f'pytest_iac.deployment(path, scope="{scope}").'
    )

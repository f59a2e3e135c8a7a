"""The deploy fixtures, and `deployment()` that builds shared ones.

Every deploying fixture comes from one generator, `_deployments()`: it hands out a deploy
function and, on teardown, destroys what that function deployed. The destroy is registered
before the apply starts, so a failed or half-finished apply is destroyed too.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest
from _pytest.mark import MarkMatcher  # how -m matches an item's markers
from _pytest.mark.expression import Expression

from pytest_iac import shared, signals, tfconfig
from pytest_iac.advice import failed_deployment, unexpected_keyword
from pytest_iac.errors import DestroyError, IacError, IacWarning, UnsavedStateError
from pytest_iac.plan import Plan
from pytest_iac.run import IacRun
from pytest_iac.sandbox import Stack
from pytest_iac.vcs import Changes

RUN_KEY = pytest.StashKey[IacRun]()
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
CHANGES_KEY = pytest.StashKey[Changes]()  # --iac-changed-since: what changed

# Set on the function of every fixture that deploys: tests using one are marked `sandbox`.
DEPLOYS = "_pytest_iac_deploys"
# On a `deployment()` fixture: (scope, path, var files), what --iac-changed-since watches.
DEPLOYMENT = "_pytest_iac_deployment"

# The keyword arguments of the deploy functions, iac_plan and deployment(): a typo names these.
PLAN_OPTIONS = ("vars", "var_files", "env", "backend_config")
DEPLOY_OPTIONS = (*PLAN_OPTIONS, "from_ref", "init_upgrade", "parallelism")


class Deploy(Protocol):
    def __call__(
        self,
        path: str | Path = ".",
        *,
        vars: Mapping[str, Any] | None = None,
        var_files: Sequence[str | Path] = (),
        env: Mapping[str, str] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        from_ref: str | None = None,
        init_upgrade: bool = False,
        parallelism: int | None = None,
    ) -> Stack: ...


class _Named:
    """A fixture's function with a repr that says what it is (not `<function ...locals...>`)."""

    def __init__(self, function: Callable[..., Any], description: str) -> None:
        self._function = function
        self._description = description

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        return self._function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self._description}>"


def deploys(item: pytest.Item) -> bool:
    """Whether a test uses a deploying fixture, directly or through other fixtures."""
    info = getattr(item, "_fixtureinfo", None)  # the closure of the test's fixtures
    if info is None:
        return False
    return any(
        defs and getattr(defs[-1].func, DEPLOYS, False) for defs in info.name2fixturedefs.values()
    )


def iac_run(request: pytest.FixtureRequest) -> IacRun:
    return request.config.stash[RUN_KEY]


def selects(config: pytest.Config, marker: str) -> bool:
    """Does `-m` name `marker` in a way that can select its items (not `-m "not drift"`)?"""
    markexpr = config.getoption("markexpr", "") or ""
    if not re.search(rf"\b{marker}\b", markexpr):
        return False
    try:
        expression = Expression.compile(markexpr)
    except Exception:  # SyntaxError; ParseError in pytest before 8.4
        return False  # pytest itself says what is wrong with it
    return expression.evaluate(MarkMatcher.from_markers([getattr(pytest.mark, marker).mark]))


def _base_dir(request: pytest.FixtureRequest) -> Path:
    """Where relative module paths start: the requesting test file's directory."""
    if request.scope in ("session", "package"):
        return request.config.rootpath
    return Path(request.path).parent


def _test_failed(request: pytest.FixtureRequest, failures_before: int) -> bool:
    if request.scope == "function":
        reports = request.node.stash.get(REPORTS_KEY, {})
        return any(report.failed for report in reports.values())
    return request.session.testsfailed > failures_before


def _deployments(request: pytest.FixtureRequest) -> Iterator[Deploy]:
    name = request.fixturename or "deploy"
    run = iac_run(request)
    base = _base_dir(request)
    failures_before = request.session.testsfailed
    stacks: list[Stack] = []
    calls: dict[str, int] = {}
    # Under pytest-xdist, a session's deployments are the run's, made once (`shared`).
    sharing = run.shared if request.scope == "session" else None

    def deploy(
        path: str | Path = ".",
        *,
        vars: Mapping[str, Any] | None = None,
        var_files: Sequence[str | Path] = (),
        env: Mapping[str, str] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        from_ref: str | None = None,
        init_upgrade: bool = False,
        parallelism: int | None = None,
        **unknown: Any,
    ) -> Stack:
        __tracebackhide__ = True
        if unknown:
            raise unexpected_keyword(name, unknown, DEPLOY_OPTIONS)
        source = (base / path).resolve()  # shown in messages: no `x/../`
        files = [(base / f).resolve() for f in var_files]
        if from_ref is None:  # the module at a ref may declare other variables
            _warn_undeclared(source, vars, files)
        options: dict[str, Any] = {
            "vars": vars,
            "var_files": files,
            "env": env,
            "backend_config": backend_config,
        }
        alike = shared.key(name, source, {**options, "from_ref": from_ref})
        calls[alike] = calls.get(alike, 0) + 1
        share = f"{alike}-{calls[alike]}"  # a second alike deployment is another one

        def make() -> Stack:
            stack = run.sandbox.stack(
                source,
                run.name(request.node.name, share if sharing else request.node.nodeid),
                **options,
                test_id=request.node.nodeid,
                from_ref=from_ref,
                init_upgrade=init_upgrade,
                parallelism=parallelism,
            )
            stacks.append(stack)  # registered for teardown before the apply starts
            return stack.apply()

        try:
            if sharing is None:
                return make()
            got = sharing.get(share, make, run.ledger)
            if isinstance(got, shared.Made):  # another worker made it
                return shared.SharedStack(run.terraform, got, **options)
            stacks.remove(got)  # the run's, not this worker's: destroyed by the controller
            run.handed_over.append(got)
            run.ledger.made -= 1  # counted by the controller, even if this worker dies
            return got
        except IacError as error:
            if request.scope != "function":  # pytest shows it for every test of the scope
                failed_deployment(error, str(source))
            # The user's line and terraform's diagnostic; no trace through our internals.
            raise error.with_traceback(None) from None

    scope = "test" if request.scope == "function" else request.scope
    yield _Named(deploy, f"{name}: deploys a module, destroyed when the {scope} ends")

    _teardown(request, run, stacks, failures_before)


def _warn_undeclared(
    module_dir: Path, vars: Mapping[str, Any] | None, var_files: Sequence[Path]
) -> None:
    """Values for variables the module does not declare: Terraform ignores them quietly."""
    if not tfconfig.is_module_dir(module_dir) or not isinstance(vars, Mapping | None):
        return  # the deployment says what is wrong with the path, or with the vars
    names = tfconfig.undeclared_variables(module_dir, vars or {}, var_files)
    if names:
        warnings.warn(
            IacWarning(
                f"{module_dir} declares no variable {', '.join(names)}: the value given is "
                "ignored (a typo, or a variable the module no longer has?)"
            ),
            stacklevel=4,  # the test's call (through the fixture's `_Named` function)
        )


def _teardown(
    request: pytest.FixtureRequest, run: IacRun, stacks: list[Stack], failures_before: int
) -> None:
    """Destroy (or keep) `stacks`, newest first, through failures, timeouts and interrupts.

    A destroy that fails, or is stopped by a second interrupt or a timeout, leaves the
    deployment in the ledger and says how to finish: `pytest --iac-cleanup`.
    """
    errors: list[str] = []
    stopped: BaseException | None = None
    postponed: int | None = None
    interrupted = False
    for stack in reversed(stacks):
        if not stack.needs_destroy:
            stack.destroy()  # nothing was applied: only removes the working directory
        elif run.teardown == "never":
            run.keep(stack, "--iac-teardown=never")
        elif run.teardown == "on-success" and _test_failed(request, failures_before):
            run.keep(stack, "--iac-teardown=on-success and the test failed")
        elif stopped is not None or run.interrupts > 1:
            run.failed.append(stack)
            signals.tell(request.config, _left_message(run, stack, "not destroyed: aborted"))
        else:
            interrupted = run.interrupts > 0
            try:
                with signals.shield(
                    interrupted, partial(signals.tell, request.config), f"destroying {stack.source}"
                ) as shield:
                    stack.destroy()
            except (DestroyError, UnsavedStateError) as error:
                run.failed.append(stack)
                errors.append(str(error))
            except BaseException as error:  # an interrupt or a timeout stopped the destroy
                run.failed.append(stack)
                if isinstance(error, KeyboardInterrupt):
                    run.interrupts = max(run.interrupts, 1) + 1
                why = "destroy stopped: " + (str(error).splitlines() or [type(error).__name__])[0]
                signals.tell(request.config, _left_message(run, stack, why))
                stopped = error
            if shield.postponed is not None:
                postponed = shield.postponed
    # Once pytest is stopping (interrupted, or finishing), raising would only add a traceback.
    stopping = interrupted or run.finishing
    if stopped is not None:
        if isinstance(stopped, KeyboardInterrupt) and stopping:
            return  # said above what is left
        raise stopped
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)
    if postponed is not None and not stopping:
        raise signals.interrupt_for(postponed)  # the interrupt the destroy held back


def _left_message(run: IacRun, stack: Stack, why: str) -> str:
    record = run.ledger.record_path(stack)
    return (
        f"pytest-iac: {stack.source} {why}. It stays deployed and in the ledger "
        f"({record}); to finish, run `pytest --iac-cleanup` in the project, or by hand:\n"
        f"  {stack.destroy_command()}"
    )


def _deploy_fixture(scope: str, name: str) -> Any:
    def fixture(request: pytest.FixtureRequest) -> Iterator[Deploy]:
        yield from _deployments(request)

    setattr(fixture, DEPLOYS, True)
    fixture.__name__ = name
    fixture.__doc__ = f"""Deploy a module for the {scope}: `{name}(path, *, vars=...) -> Stack`.

    A relative path resolves against the test file's directory. Every deployment is
    destroyed when the {scope} ends (see --iac-teardown)."""
    return pytest.fixture(scope=scope, name=name)(fixture)  # type: ignore[call-overload]


# One generator, three scopes.
iac_deploy = _deploy_fixture("function", "iac_deploy")
iac_module_deploy = _deploy_fixture("module", "iac_module_deploy")
iac_session_deploy = _deploy_fixture("session", "iac_session_deploy")


def deployment(
    path: str | Path,
    *,
    scope: str = "module",
    vars: Mapping[str, Any] | None = None,
    var_files: Sequence[str | Path] = (),
    env: Mapping[str, str] | None = None,
    backend_config: Mapping[str, Any] | None = None,
    from_ref: str | None = None,
    init_upgrade: bool = False,
    parallelism: int | None = None,
    **unknown: Any,
) -> Any:
    """A fixture that deploys `path` once for `scope`, shared by the tests that use it.

        network = pytest_iac.deployment("../network", vars={"name": "shared"})

        def test_subnets(network):  # network is a Stack
            assert len(network.outputs["subnet_ids"]) == 2

    The fixture is named by the variable it is assigned to. A relative path resolves against
    the directory of the test module using it (the rootdir for scope="session").
    """
    __tracebackhide__ = True
    if unknown:
        raise unexpected_keyword("deployment", unknown, DEPLOY_OPTIONS)
    if scope not in ("class", "module", "package", "session"):
        raise ValueError(f"scope must be class, module, package or session, not {scope!r}")

    def fixture(request: pytest.FixtureRequest) -> Iterator[Stack]:
        deployments = _deployments(request)
        deploy = next(deployments)
        try:
            stack = deploy(
                path,
                vars=vars,
                var_files=var_files,
                env=env,
                backend_config=backend_config,
                from_ref=from_ref,
                init_upgrade=init_upgrade,
                parallelism=parallelism,
            )
        except IacError as error:
            _finish(deployments)
            # Shown once; the other tests of the scope refer to it (`advice.repeated_failure`).
            failure = pytest.fail.Exception(str(error), pytrace=False)
            what = failed_deployment(error) or path
            failed_deployment(failure, f"`{request.fixturename}` ({what})")
            raise failure from None
        except BaseException as error:  # an interrupt or a timeout during the apply
            if isinstance(error, KeyboardInterrupt):
                iac_run(request).interrupts += 1
            _finish(deployments)
            raise
        yield stack
        _finish(deployments)

    setattr(fixture, DEPLOYS, True)
    setattr(fixture, DEPLOYMENT, (scope, Path(path), tuple(Path(f) for f in var_files)))
    return pytest.fixture(scope=scope)(fixture)  # type: ignore[call-overload]


def _finish(generator: Iterator[Any]) -> None:
    for _ in generator:
        pass


@pytest.fixture
def iac_name(request: pytest.FixtureRequest) -> str:
    """A short DNS-safe name unique to this test and run, e.g. `t-test-bucket-3f9a1c`."""
    return iac_run(request).name(request.node.name, request.node.nodeid)


@pytest.fixture
def iac_plan(request: pytest.FixtureRequest) -> Callable[..., Plan]:
    """Plan a module against empty state, deploying nothing: `iac_plan(path, *, vars=...)`.

    With `backend_config=...`, the plan is against the state in the module's backend."""
    run = iac_run(request)
    base = _base_dir(request)

    def plan(
        path: str | Path = ".",
        *,
        vars: Mapping[str, Any] | None = None,
        var_files: Sequence[str | Path] = (),
        env: Mapping[str, str] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> Plan:
        __tracebackhide__ = True
        if unknown:
            raise unexpected_keyword("iac_plan", unknown, PLAN_OPTIONS)
        _warn_undeclared((base / path).resolve(), vars, [(base / f).resolve() for f in var_files])
        try:
            return run.sandbox.plan(
                (base / path).resolve(),
                run.name(request.node.name, request.node.nodeid),
                vars=vars,
                var_files=[(base / f).resolve() for f in var_files],
                env=env,
                backend_config=backend_config,
            )
        except IacError as error:
            raise error.with_traceback(None) from None

    return _Named(plan, "iac_plan: plans a module against empty state, deploys nothing")

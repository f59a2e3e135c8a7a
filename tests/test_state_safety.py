"""A sandbox deployment has a state of its own: it never reads, adopts or destroys another.

A module under test may declare a backend (a test written beside a live root module, say).
The sandbox copy gets local state instead, whatever the module declares; only an explicit
`backend_config=` keeps the module's backend, and then a state that already holds resources
is refused before anything is applied. Variables are checked before anything is recorded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import StateServer, leftovers

from pytest_iac.errors import IacError
from pytest_iac.sandbox import unsaved_state, var_file_text

RESOURCE = """
resource "terraform_data" "x" { input = "made here" }
output "id" { value = terraform_data.x.id }
"""

LOCAL_BACKEND = """
terraform {
  backend "local" {
    path = "%s"
  }
}
"""

CLOUD = """
terraform {
  cloud {
    organization = "acme"
    workspaces { name = "prod" }
  }
}
"""

S3_BACKEND = """
terraform {
  backend "s3" {}
}
"""


def terraform_binary() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("the real state is made with the terraform binary; none on PATH")
    return found


def apply_elsewhere(code: dict[str, str], where: Path, *init_args: str) -> None:
    """Apply `code` with plain terraform in a directory of its own, as its owners would have:
    the module under test itself never sees a `.terraform` or a state."""
    where.mkdir(parents=True)
    for name, text in code.items():
        (where / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    for args in (["init", *init_args], ["apply", "-auto-approve"]):
        subprocess.run(
            [terraform_binary(), *args, "-input=false", "-no-color"],
            cwd=where,
            env=env,
            check=True,
            capture_output=True,
        )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resource_ids(state: Path) -> list[str]:
    data = json.loads(state.read_text())
    return [i["attributes"]["id"] for r in data["resources"] for i in r["instances"]]


def ledger_records(home: Path) -> list[Path]:
    return sorted(home.rglob("ledger/*.json"))


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def live_state(pytester: pytest.Pytester) -> Path:
    """A real local state holding one resource, made beforehand, outside the test's tree."""
    state = pytester.path / "real" / "terraform.tfstate"
    state.parent.mkdir()
    apply_elsewhere({"main.tf": LOCAL_BACKEND % state + RESOURCE}, pytester.path / "owner")
    assert len(resource_ids(state)) == 1
    return state


# How a module may declare the backend it lives in; each points at the real state.
LAYOUTS = {
    "backend block": lambda state: {"main.tf": LOCAL_BACKEND % state + RESOURCE},
    # An override file of the user's that sorts late still loses to the sandbox's.
    "late override file": lambda state: {
        "main.tf": S3_BACKEND + RESOURCE,
        "zz_override.tf": LOCAL_BACKEND % state,
    },
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_deploy_gets_its_own_state_whatever_backend_the_module_declares(
    pytester: pytest.Pytester, engine: str, iac_home: Path, live_state: Path, layout: str
) -> None:
    module = pytester.path / "live"
    module.mkdir()
    for name, text in LAYOUTS[layout](live_state).items():
        (module / name).write_text(text)
    before, real_ids = digest(live_state), resource_ids(live_state)
    pytester.makepyfile(
        f"""
import stat

def test_beside_live_code(iac_deploy):
    stack = iac_deploy("live")
    assert stack.resources == ["terraform_data.x"]
    assert stack.outputs["id"] not in {real_ids!r}  # made by this test, not found
    assert (stack.module_dir / "terraform.tfstate").is_file()
    assert stat.S_IMODE(stack.workdir.stat().st_mode) == 0o700
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-binary={engine}")
    result.assert_outcomes(passed=1)
    assert digest(live_state) == before  # not destroyed, not even rewritten
    assert files(module) == sorted(LAYOUTS[layout](live_state))  # the code is only read
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_deploy_of_a_module_with_a_cloud_block_runs_on_local_state(
    pytester: pytest.Pytester, engine: str, iac_home: Path
) -> None:
    """A `cloud` block is replaced too: no HCP Terraform workspace is looked up or used."""
    (pytester.path / "main.tf").write_text(CLOUD + RESOURCE)
    pytester.makepyfile(
        """
def test_app(iac_deploy):
    assert iac_deploy(".").resources == ["terraform_data.x"]
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-binary={engine}")
    result.assert_outcomes(passed=1)
    assert leftovers(iac_home) == []


def test_override_file_that_sorts_after_the_sandboxs_is_refused(
    pytester: pytest.Pytester, iac_home: Path, live_state: Path
) -> None:
    """Only a name beyond ASCII sorts after the sandbox's override file: init shows that the
    backend is not the sandbox's own, and nothing is applied."""
    (pytester.path / "live").mkdir()
    (pytester.path / "live" / "main.tf").write_text(RESOURCE)
    (pytester.path / "live" / "é_override.tf").write_text(LOCAL_BACKEND % live_state)
    before = digest(live_state)
    pytester.makepyfile(
        """
def test_app(iac_deploy):
    iac_deploy("live")
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E *IacError: refused to deploy */live: after pytest-iac's override file "
            f"~pytest-iac_override.tf, its state is still in the local backend (path = "
            f"{live_state}). An override file of the module's sorts after it *"
        ]
    )
    assert "pytest_iac/" not in result.stdout.str()
    assert digest(live_state) == before
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def tagged_v1(module: Path, main_tf: str) -> Path:
    """`module` in a git repository of its own (its parent), committed and tagged v1."""
    module.mkdir(parents=True)
    (module / "main.tf").write_text(main_tf)
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "v1"], ["tag", "v1"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=module.parent,
            check=True,
        )
    return module


def test_upgrade_test_keeps_a_state_of_its_own_across_the_code_swap(
    pytester: pytest.Pytester, iac_home: Path, live_state: Path
) -> None:
    """An upgrade test puts other code in place and runs init again: on local state still."""
    module = tagged_v1(pytester.path / "repo" / "live", LOCAL_BACKEND % live_state + RESOURCE)
    (module / "main.tf").write_text(LOCAL_BACKEND % live_state + RESOURCE.replace("here", "later"))
    (module / "test_swap_keeps_own_state.py").write_text(  # a name no other test module has
        """
def test_upgrade(iac_deploy):
    stack = iac_deploy(".", from_ref="v1")
    assert [c.address for c in stack.upgrade().changes] == ["terraform_data.x"]
    assert stack.apply().resources == ["terraform_data.x"]
"""
    )
    before = digest(live_state)
    result = pytester.runpytest(str(module), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert digest(live_state) == before
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_an_upgrade_that_cannot_plan_is_still_destroyed_on_the_sandboxs_state(
    pytester: pytest.Pytester, iac_home: Path, live_state: Path
) -> None:
    """The old code put back after a failed upgrade is initialised again before the
    teardown's destroy: the swap removed the copy's `.terraform` and override file."""
    module = tagged_v1(pytester.path / "repo" / "live", LOCAL_BACKEND % live_state + RESOURCE)
    (module / "main.tf").write_text(
        LOCAL_BACKEND % live_state + RESOURCE + 'output "broken" { value = var.missing }\n'
    )
    (module / "test_failed_upgrade_destroyed.py").write_text(  # a name no other test has
        """
import pytest
import pytest_iac

def test_broken_upgrade(iac_deploy):
    stack = iac_deploy(".", from_ref="v1")
    with pytest.raises(pytest_iac.TerraformError, match="var.missing"):
        stack.upgrade()
"""
    )
    before = digest(live_state)
    result = pytester.runpytest(str(module), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["deployments: 1 made, 1 destroyed*"])
    assert digest(live_state) == before
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_plan_is_against_an_empty_state_whatever_backend_the_module_declares(
    pytester: pytest.Pytester, engine: str, iac_home: Path, live_state: Path
) -> None:
    (pytester.path / "live").mkdir()
    (pytester.path / "live" / "main.tf").write_text(LOCAL_BACKEND % live_state + RESOURCE)
    before = digest(live_state)
    pytester.makepyfile(
        """
def test_plan(iac_plan):
    plan = iac_plan("live")
    assert [(c.address, c.action) for c in plan.changes] == [("terraform_data.x", "create")]
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-binary={engine}")
    result.assert_outcomes(passed=1)
    assert digest(live_state) == before
    assert leftovers(iac_home) == []


def test_explicit_local_backend_holding_resources_is_refused_before_anything_is_applied(
    pytester: pytest.Pytester, engine: str, iac_home: Path, live_state: Path
) -> None:
    (pytester.path / "live").mkdir()
    (pytester.path / "live" / "main.tf").write_text(LOCAL_BACKEND % "unused.tfstate" + RESOURCE)
    before = digest(live_state)
    empty = pytester.path / "empty" / "terraform.tfstate"
    empty.parent.mkdir()
    pytester.makepyfile(
        f"""
def test_into_the_real_state(iac_deploy):
    iac_deploy("live", backend_config={{"path": {str(live_state)!r}}})

def test_plan_against_the_real_state(iac_plan):
    assert iac_plan("live", backend_config={{"path": {str(live_state)!r}}}).is_empty

def test_into_an_empty_state(iac_deploy):
    assert iac_deploy("live", backend_config={{"path": {str(empty)!r}}}).resources == [
        "terraform_data.x"
    ]
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-binary={engine}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_into_the_real_state*",
            f"E * refused to deploy into the local backend (path = {live_state}): "
            "its state already holds 1 resource*",
        ]
    )
    assert "pytest_iac/" not in result.stdout.str()
    assert digest(live_state) == before  # nothing applied, nothing destroyed
    assert resource_ids(empty) == []  # the empty one: deployed into, then destroyed
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_explicit_s3_backend_on_moto(
    pytester: pytest.Pytester, engine: str, iac_home: Path, moto_endpoint: str
) -> None:
    """Terratest-style: the module declares `backend "s3" {}`, the test passes the rest.

    A state object that holds resources stays byte for byte; an empty key is a normal run.
    """
    boto3 = pytest.importorskip("boto3")
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"state-{hashlib.sha256(str(pytester.path).encode()).hexdigest()[:12]}"
    s3.create_bucket(Bucket=bucket)
    secret = "backend-s3cr3t-canary"
    settings = {
        "bucket": bucket,
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": secret,
        "use_path_style": True,
        "skip_credentials_validation": True,
        "skip_requesting_account_id": True,
        "skip_metadata_api_check": True,
        "endpoints": {"s3": moto_endpoint},
    }
    owner = pytester.path / "owner"
    owner.mkdir()
    (owner / "moto.tfbackend").write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in {**settings, "key": "live.tfstate"}.items())
    )
    apply_elsewhere(
        {"main.tf": S3_BACKEND + RESOURCE}, owner / "code", "-backend-config=../moto.tfbackend"
    )
    live_before = s3.get_object(Bucket=bucket, Key="live.tfstate")["Body"].read()
    (pytester.path / "app").mkdir()
    (pytester.path / "app" / "main.tf").write_text(S3_BACKEND + RESOURCE)
    pytester.makepyfile(
        f"""
SETTINGS = {settings!r}

def test_into_the_live_state(iac_deploy):
    iac_deploy("app", backend_config={{**SETTINGS, "key": "live.tfstate"}})

def test_into_an_empty_key(iac_deploy):
    stack = iac_deploy("app", backend_config={{**SETTINGS, "key": "empty.tfstate"}})
    assert stack.resources == ["terraform_data.x"]
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-binary={engine}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E * refused to deploy into the s3 backend (bucket = {bucket}, key = live.tfstate, "
            "region = us-east-1): its state already holds 1 resource*",
        ]
    )
    assert secret not in result.stdout.str() + result.stderr.str()
    assert s3.get_object(Bucket=bucket, Key="live.tfstate")["Body"].read() == live_before
    empty_after = json.loads(s3.get_object(Bucket=bucket, Key="empty.tfstate")["Body"].read())
    assert empty_after["resources"] == []  # deployed into, then destroyed
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


CANNOT_HOLD = ", which a Terraform variable cannot hold: give str, int, float, bool, None, *"


@pytest.mark.parametrize(
    ("vars", "shown"),
    [
        ("{'zones': {'a', 'b'}}", "vars['zones'] is a set" + CANNOT_HOLD),
        (
            "{'zones': {'ports': [80, datetime.date(2026, 1, 2)]}}",
            "vars['zones']['ports'][1] is a date" + CANNOT_HOLD,
        ),
        ("{'zones': float('nan')}", "vars['zones'] is nan" + CANNOT_HOLD),
        ("[('zones', 'a')]", "vars must be a dict of variable names and values, not a list"),
    ],
)
def test_variable_terraform_cannot_take_is_refused_before_anything_starts(
    pytester: pytest.Pytester, iac_home: Path, vars: str, shown: str
) -> None:
    (pytester.path / "main.tf").write_text('variable "zones" {}\n' + RESOURCE)
    pytester.makepyfile(
        f"""
import datetime

def test_app(iac_deploy):
    iac_deploy(".", vars={vars})
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    shown = shown.replace("[", "[[]")  # literal brackets to fnmatch
    result.stdout.fnmatch_lines([f"E *IacError: {shown}", "*.py:4: IacError"])  # the user's line
    assert "pytest_iac/" not in result.stdout.str()
    assert "terraform init" not in result.stdout.str()
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_working_directories_are_private(pytester: pytest.Pytester, iac_home: Path) -> None:
    """They hold the state, which holds secrets in clear: 0700, as the init cache is."""
    (pytester.path / "main.tf").write_text(RESOURCE)
    pytester.makepyfile(
        """
import stat

def test_app(iac_deploy):
    assert stat.S_IMODE(iac_deploy(".").workdir.stat().st_mode) == 0o700
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert leftovers(iac_home) == []


# The fast tier: what a var file can hold, without terraform


def _holds_itself() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("vars", "message"),
    [
        ({"x": b"raw"}, "vars['x'] is a bytes, which a Terraform variable cannot hold"),
        ({"x": {1: "a"}}, "vars['x'] has a key 1 that is not a str"),
        ({"x": [1, float("inf")]}, "vars['x'][1] is inf"),
        ({"x": _holds_itself()}, "vars is nested too deeply (or holds itself)"),
        ([("x", 1)], "vars must be a dict of variable names and values, not a list"),
    ],
)
def test_var_file_text_names_what_json_cannot_hold(vars: object, message: str) -> None:
    with pytest.raises(IacError, match=re.escape(message)):
        var_file_text(vars)  # type: ignore[arg-type]


def test_var_file_text_keeps_every_json_type() -> None:
    values = {"s": "a", "n": 1, "f": 0.5, "b": True, "none": None, "t": (1, "2"), "m": {"k": []}}
    assert json.loads(var_file_text(values)) == {**values, "t": [1, "2"]}


def test_resources_terraform_could_not_save_stay_in_errored_tfstate_and_the_ledger(
    pytester: pytest.Pytester, engine: str, iac_home: Path, state_server: StateServer
) -> None:
    """The backend refuses the state after the apply made a resource: Terraform writes it to
    errored.tfstate. The deployment is kept, and the message says how to finish."""
    (pytester.path / "app").mkdir()
    (pytester.path / "app" / "main.tf").write_text(
        'terraform {\n  backend "http" {}\n}\n' + RESOURCE
    )
    state_server.refuse_writes = True
    pytester.makepyfile(
        f"""
def test_app(iac_deploy):
    iac_deploy("app", backend_config={{"address": "{state_server.address}"}})
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-binary={engine}")
    result.assert_outcomes(failed=1, errors=1)
    [errored] = iac_home.rglob("errored.tfstate")
    assert len(resource_ids(errored)) == 1  # made, and saved nowhere else
    result.stdout.fnmatch_lines(
        [
            f"*Terraform could not save the state of *app: {errored} holds 1 resource*",
            f"*cd {errored.parent} && *state push errored.tfstate && "
            "mv errored.tfstate errored.tfstate.pushed",
        ]
    )
    [record] = ledger_records(iac_home)

    cleanup = pytester.runpytest("-p", "no:cacheprovider", "--iac-cleanup")
    assert cleanup.ret != 0
    cleanup.stdout.fnmatch_lines([f"REFUSED *: {errored} holds 1 resource*"])
    assert errored.exists()
    assert record.exists()

    state_server.refuse_writes = False  # the backend is back: finish as the message says
    [finish] = {line.strip() for line in cleanup.outlines if "state push" in line}
    subprocess.run(["sh", "-c", finish], check=True, capture_output=True)
    pytester.runpytest("-p", "no:cacheprovider", "--iac-cleanup").stdout.fnmatch_lines(
        ["*1 destroyed, 0 failed*"]
    )
    assert json.loads(state_server.state)["resources"] == []
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (None, None),
        ('{"version": 4, "resources": []}', None),
        ('{"resources": [{"mode": "data", "instances": [{}]}]}', None),
        (
            '{"resources": [{"mode": "managed", "instances": [{}, {}]}]}',
            "{path} holds 2 resources Terraform made but could not save to the deployment's state",
        ),
        ('{"resources": [', "{path} cannot be read as a state, and may hold resources *"),
        ("[]", "{path} cannot be read as a state, and may hold resources *"),
    ],
)
def test_unsaved_state_counts_resources_and_distrusts_what_it_cannot_read(
    tmp_path: Path, text: str | None, shown: str | None
) -> None:
    path = tmp_path / "errored.tfstate"
    if text is not None:
        path.write_text(text)
    said = unsaved_state(tmp_path)
    if shown is None:
        assert said is None
    else:
        assert said is not None
        assert fnmatch.fnmatch(said, shown.format(path=path))

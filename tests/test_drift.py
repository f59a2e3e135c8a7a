"""Drift checks of live configuration: examples/live deployed once into a moto S3 backend.

The live tree is deployed once per session with plain `terraform apply` (as its owners would
have done); every test then works on its own copy of the code against that same state, and
proves the state objects are byte-identical afterwards.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import git
import pytest

from pytest_iac.drift import check_drift, plan_environment
from pytest_iac.engine import Settings, Terraform, cli_config, find_engine
from pytest_iac.live import find_live_roots
from tests.conftest import EXAMPLES, free_port, leftovers

BUCKET = "drift-live-state"
# Built-in terraform_data resources only: planned in a fraction of a second.
BUILTIN_DIRS = ["live/prod/app", "live/prod/network", "live/staging/app", "live/staging/network"]
# S3 buckets through the hashicorp/aws provider: seconds per plan, and only with a mirror.
AWS_DIRS = ["live/prod/storage", "live/staging/storage"]
LIVE_DIRS = sorted(BUILTIN_DIRS + AWS_DIRS)
# The drift runs that are not about AWS leave the storage dirs out, for speed.
WITHOUT_AWS = ("-o", "iac_live_exclude=live/*/storage")


def aws_env(endpoint: str) -> dict[str, str]:
    """What points the AWS provider (and boto3) at the moto server: no edits to the code."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def backend_settings(endpoint: str, **extra: object) -> str:
    """Run-wide backend configuration for the moto S3 backend: what CI would pass."""
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
        **extra,
    }
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def s3(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def state_objects(endpoint: str, bucket: str = BUCKET) -> dict[str, bytes]:
    """Every object in a state bucket, by key: states, and locks if any were left."""
    client = s3(endpoint)
    listing = client.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return {
        o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()  # type: ignore[attr-defined]
        for o in listing.get("Contents", [])
    }


def tree_snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root` (hidden ones too) with its mtime and content hash."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def code_snapshot(repo: Path) -> dict[str, tuple[int, str]]:
    """The live code and the modules it uses, file by file."""
    return {**tree_snapshot(repo / "live"), **tree_snapshot(repo / "modules")}


def copy_live_tree(destination: Path) -> Path:
    """examples/live and the modules it uses, as a user's repository would hold them."""
    for name in ("live", "modules"):
        shutil.copytree(
            EXAMPLES / name,
            destination / name,
            ignore=shutil.ignore_patterns("test_*.py", "__pycache__", ".terraform*", "*.tfstate*"),
            dirs_exist_ok=True,
        )
    return destination


def deploy_live(
    endpoint: str, work: Path, names: list[str], mirror: Path | None = None
) -> dict[str, bytes]:
    """Apply live dirs with plain terraform, as their owners would have; the states after."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("the live tree is deployed with the terraform binary; none on PATH")
    tree = copy_live_tree(work / "repo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    env.update(TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    if mirror is not None:
        (work / "plugin-cache").mkdir()
        (work / "terraform.rc").write_text(cli_config(work / "plugin-cache", [mirror]))
        env.update(aws_env(endpoint), TF_CLI_CONFIG_FILE=str(work / "terraform.rc"))
    init_lock = threading.Lock()  # one init at a time: they share the plugin cache

    def deploy(name: str) -> None:
        steps = [
            ["init", "-input=false", "-backend-config=backend.tfbackend"],
            ["apply", "-auto-approve", "-input=false"],
        ]
        if name in AWS_DIRS:
            # moto gives a new bucket no default encryption until the module's encryption
            # resource is applied, after the bucket's state was saved: save the refreshed
            # state, as examples/live/README.md says, or every check reports it as state drift.
            steps.append(["apply", "-refresh-only", "-auto-approve", "-input=false"])
        for args in steps:
            if args[0] == "init":
                args.append(f"-backend-config={work.parent / 'moto.tfbackend'}")
            with init_lock if args[0] == "init" else contextlib.nullcontext():
                subprocess.run(
                    [terraform, *args, "-no-color"],
                    cwd=tree / name,
                    env={**env, "TF_DATA_DIR": str(work / "tfdata" / name)},
                    check=True,
                    capture_output=True,
                )

    # Each directory has its own state: deploy them side by side, as separate pipelines would.
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        for future in [pool.submit(deploy, name) for name in names]:
            future.result()
    states = state_objects(endpoint)
    keys = {f"{d.removeprefix('live/')}/terraform.tfstate" for d in names}
    assert keys <= set(states)
    return {k: v for k, v in states.items() if k in keys}


@dataclass
class Deployed:
    endpoint: str
    backend_file: Path  # run-wide backend settings, as CI would pass them
    states: dict[str, bytes]  # the state objects right after the deployment


@pytest.fixture(scope="session")
def deployed(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """examples/live applied once into a bucket on the moto server, but for the storage dirs.

    Those need the hashicorp/aws provider and cost seconds per command: `deployed_storage`
    adds them for the one test that checks them.
    """
    s3(moto_endpoint).create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    work = tmp_path_factory.mktemp("live-deploy")
    backend_file = work / "moto.tfbackend"
    backend_file.write_text(backend_settings(moto_endpoint))
    states = deploy_live(moto_endpoint, work / "builtin", BUILTIN_DIRS)
    return Deployed(moto_endpoint, backend_file, states)


@pytest.fixture(scope="session")
def deployed_storage(deployed: Deployed, aws_provider_mirror: Path) -> Deployed:
    """The storage dirs too (S3 buckets, in the same moto server): the whole live tree."""
    work = deployed.backend_file.parent
    deployed.states.update(
        deploy_live(deployed.endpoint, work / "storage", AWS_DIRS, aws_provider_mirror)
    )
    return deployed


@pytest.fixture
def live(pytester: pytest.Pytester, deployed: Deployed) -> Iterator[Path]:
    """A fresh copy of the live code in pytester's directory; the state is the shared one."""
    copy_live_tree(pytester.path)
    yield pytester.path / "live"
    # Whatever a test did, the live state was only read.
    assert state_objects(deployed.endpoint) == deployed.states


def drift(
    pytester: pytest.Pytester, deployed: Deployed, *args: str, aws: bool = False
) -> pytest.RunResult:
    return pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-m",
        "drift",
        f"--iac-backend-config={deployed.backend_file}",
        *(() if aws else WITHOUT_AWS),
        *args,
    )


def test_live_roots_are_collected_by_path(pytester: pytest.Pytester, live: Path) -> None:
    result = pytester.runpytest("--collect-only", "-q", "-m", "drift", "live")
    result.stdout.fnmatch_lines([f"{d}::drift" for d in LIVE_DIRS])
    assert "modules/" not in result.stdout.str()  # modules the live dirs call are not roots

    result = pytester.runpytest("--collect-only", "-q", "-m", "drift", "-k", "prod", ".")
    result.stdout.fnmatch_lines(
        ["live/prod/app::drift", "live/prod/network::drift", "live/prod/storage::drift", "*3/6*"]
    )
    assert "modules/" not in result.stdout.str()  # nor are modules nobody deployed

    # Not a drift run: live configuration is never planned by a plain `pytest`.
    result = pytester.runpytest("--collect-only", "-q", "live")
    assert "::drift" not in result.stdout.str()


def test_discovery_rule_as_a_library() -> None:
    roots = find_live_roots([EXAMPLES], base=EXAMPLES.parent)
    assert [r.relative_to(EXAMPLES).as_posix() for r in roots] == LIVE_DIRS


def test_live_exclude_and_ini_live_dirs(pytester: pytest.Pytester, live: Path) -> None:
    pytester.makeini("[pytest]\niac_live_dirs = live\niac_live_exclude = live/staging/*\n")
    result = pytester.runpytest("--collect-only", "-q", "-m", "drift")
    result.stdout.fnmatch_lines(["live/prod/app::drift", "live/prod/network::drift"])
    assert "staging" not in result.stdout.str()


def test_clean_tree_passes_and_writes_nothing(
    pytester: pytest.Pytester, live: Path, deployed: Deployed, engine: str, iac_home: Path
) -> None:
    before = code_snapshot(pytester.path)
    result = drift(pytester, deployed, f"--iac-binary={engine}", "live")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*pytest-iac: drift*",
            "clean  live/prod/app  (configuration 0, state 0, outputs 0)",
            "clean  live/prod/network  *",
            "clean  live/staging/app  *",
            "clean  live/staging/network  *",
        ]
    )
    assert result.ret == 0
    assert code_snapshot(pytester.path) == before  # no .terraform, lock file or state
    assert leftovers(iac_home) == []
    assert not list(iac_home.rglob("*.tfplan"))  # plans hold a copy of the state


def test_changes_fail_with_a_table_and_reports(
    pytester: pytest.Pytester, live: Path, deployed: Deployed, iac_home: Path
) -> None:
    app = live / "staging/app/main.tf"
    app.write_text(
        app.read_text()
        .replace("instance_count = 1", "instance_count = 2")
        .replace('LOG_LEVEL = "info"', 'LOG_LEVEL = "debug"')
    )
    network = live / "prod/network/main.tf"
    network.write_text(
        network.read_text().replace(
            "value       = module.network.vpc_id", 'value       = "vpc:${module.network.vpc_id}"'
        )
    )
    before = code_snapshot(pytester.path)
    summary = pytester.path / "step-summary.md"
    summary.write_text("# earlier step\n")
    os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
    try:
        result = drift(
            pytester,
            deployed,
            "live",
            "--iac-report-json=out/drift.json",
            "--iac-report-md=out/drift.md",
            "--junitxml=out/junit.xml",
        )
    finally:
        del os.environ["GITHUB_STEP_SUMMARY"]

    result.assert_outcomes(passed=2, failed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*drift in live/prod/network: the plan is not empty "
            "(configuration drift 0, state drift 0, output changes 1)",
            "output changes: 1",
            '  vpc_id  update   "*" -> "vpc:*"',
            "*drift in live/staging/app: the plan is not empty "
            "(configuration drift 2, state drift 0, output changes 1)",
            "configuration drift (the code differs from the state): 2",
            "  ADDRESS * ACTION * CHANGED",
            "  module.app.terraform_data.instance[[]0[]]  update   input.env.LOG_LEVEL, output",
            '* input.env.LOG_LEVEL: "info" -> "debug"',
            "  module.app.terraform_data.instance[[]1[]]  create",
            "output changes: 1",
            '  instance_ids  update   [[]"*"[]] -> [[]"*", "(known after apply)"[]]',
            "*pytest-iac: drift*",
            "clean  live/prod/app  *",
            "drift  live/prod/network  (configuration 0, state 0, outputs 1)",
            "drift  live/staging/app  (configuration 2, state 0, outputs 1)",
            "clean  live/staging/network  *",
        ]
    )
    assert "state drift (objects changed outside" not in result.stdout.str()
    assert code_snapshot(pytester.path) == before
    assert leftovers(iac_home) == []

    report = json.loads((pytester.path / "out/drift.json").read_text())
    assert report["ok"] is False
    assert report["totals"] == {
        "clean": 2,
        "drift": 2,
        "never-applied": 0,
        "not-deployed": 0,
        "error": 0,
    }
    assert report["engine"].startswith("terraform ")
    by_name = {d["name"]: d for d in report["directories"]}
    assert list(by_name) == BUILTIN_DIRS
    app_result = by_name["live/staging/app"]
    assert app_result["counts"] == {
        "configuration_drift": 2,
        "state_drift": 0,
        "output_changes": 1,
    }
    assert [(c["address"], c["action"]) for c in app_result["configuration_drift"]] == [
        ("module.app.terraform_data.instance[0]", "update"),
        ("module.app.terraform_data.instance[1]", "create"),
    ]
    assert {"path": "input.env.LOG_LEVEL", "before": "info", "after": "debug"} in app_result[
        "configuration_drift"
    ][0]["attributes"]
    assert [o["name"] for o in by_name["live/prod/network"]["output_changes"]] == ["vpc_id"]

    markdown = (pytester.path / "out/drift.md").read_text()
    assert "**2 clean, 2 drifted, 0 could not be checked.**" in markdown
    assert "| `live/staging/app` | ❌ drift | 2 | 0 | 1 |" in markdown
    assert "| `module.app.terraform_data.instance[1]` | create |  |" in markdown
    assert summary.read_text() == "# earlier step\n" + markdown

    junit = (pytester.path / "out/junit.xml").read_text()
    assert '<property name="iac_drift_status" value="drift" />' in junit
    assert '<property name="iac_drift_configuration_drift" value="2" />' in junit


def test_unreachable_backend_errors(
    pytester: pytest.Pytester, live: Path, deployed: Deployed
) -> None:
    unreachable = pytester.path / "unreachable.tfbackend"
    unreachable.write_text(backend_settings(f"http://127.0.0.1:{free_port()}", max_retries=0))
    result = drift(
        pytester,
        deployed,
        f"--iac-backend-config={unreachable}",
        "-o",
        "iac_retries=0",  # (--iac-retries=0 reads as unset: see the report)
        "--iac-report-json=drift.json",
        "live/prod/network",
    )
    result.assert_outcomes(errors=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of drift*",
            "could not check live/prod/network for drift:",
            "terraform init failed for module */live/prod/network",
            "*Error: *",
            "error  live/prod/network  (terraform init failed for module *)",
        ]
    )
    report = json.loads((pytester.path / "drift.json").read_text())
    assert report["totals"] == {
        "clean": 0,
        "drift": 0,
        "never-applied": 0,
        "not-deployed": 0,
        "error": 1,
    }
    assert report["ok"] is False


def test_parallel_runs_give_the_same_results(
    pytester: pytest.Pytester, live: Path, deployed: Deployed
) -> None:
    app = live / "prod/app/main.tf"
    app.write_text(app.read_text().replace("instance_count = 3", "instance_count = 2"))

    def run(*args: str) -> tuple[pytest.RunResult, list[dict[str, object]]]:
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "-m",
            "drift",
            "live",
            f"--iac-backend-config={deployed.backend_file}",
            "--iac-report-json=drift.json",
            *WITHOUT_AWS,
            *args,
        )
        report = json.loads((pytester.path / "drift.json").read_text())
        return result, [
            {k: d[k] for k in ("name", "status", "counts", "configuration_drift")}
            for d in report["directories"]
        ]

    serial, serial_report = run()
    parallel, parallel_report = run("-n", "2")
    serial.assert_outcomes(passed=3, failed=1)
    parallel.assert_outcomes(passed=3, failed=1)
    assert parallel_report == serial_report
    deletes = serial_report[0]["configuration_drift"]
    assert [(c["address"], c["action"]) for c in deletes] == [  # type: ignore[index,union-attr]
        ("module.app.terraform_data.instance[2]", "delete")
    ]
    parallel.stdout.fnmatch_lines(["*pytest-iac: drift*", "drift  live/prod/app  *"])


def test_local_backend_state_is_only_read(pytester: pytest.Pytester, iac_home: Path) -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("needs the terraform binary to deploy the live directory")
    live = pytester.path / "live" / "dev"
    live.mkdir(parents=True)
    (live / "main.tf").write_text(
        'resource "terraform_data" "a" {\n  input = "one"\n}\n'
        'resource "terraform_data" "b" {\n  input = "two"\n}\n'
    )
    env = {**os.environ, "TF_DATA_DIR": str(pytester.path / "deploy-tfdata")}
    for args in (["init"], ["apply", "-auto-approve"]):
        subprocess.run(
            [terraform, *args, "-no-color"], cwd=live, env=env, check=True, capture_output=True
        )
    (live / "main.tf").write_text(
        'resource "terraform_data" "a" {\n  input = "changed"\n}\n'
        'resource "terraform_data" "c" {\n  input = "three"\n}\n'
    )
    before = tree_snapshot(live)
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "drift", "live")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "configuration drift (the code differs from the state): 3",
            "  terraform_data.a  update   input, output",
            '* input: "one" -> "changed"',
            "  terraform_data.b  delete",
            "  terraform_data.c  create",
        ]
    )
    assert tree_snapshot(live) == before  # the state is byte-identical, no lock, no .terraform
    assert sorted(p.name for p in live.iterdir()) == ["main.tf", "terraform.tfstate"]
    assert leftovers(iac_home) == []


def test_marker_gives_a_plan_for_custom_policies(
    pytester: pytest.Pytester, live: Path, deployed: Deployed
) -> None:
    app = live / "staging/app/main.tf"
    app.write_text(app.read_text().replace("instance_count = 1", "instance_count = 2"))
    pytester.makepyfile(
        test_policy="""
        import pytest

        @pytest.mark.drift("live/staging/app")
        def test_nothing_is_destroyed(iac_drift):
            assert not iac_drift.deletes and not iac_drift.replaces
            assert [c.address for c in iac_drift.creates] == [
                "module.app.terraform_data.instance[1]"
            ]

        @pytest.mark.drift("live/staging/app")
        def test_nothing_changes(iac_drift):
            assert iac_drift.is_empty

        @pytest.mark.drift("live/staging/app", backend_cfg={"bucket": "x"})
        def test_typo(iac_drift):
            pass
        """
    )
    result = drift(pytester, deployed, "test_policy.py")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.drift: *unexpected keyword argument 'backend_cfg'; its keyword "
            "arguments are backend_config, vars",
        ]
    )


def test_require_trunk(pytester: pytest.Pytester, live: Path, deployed: Deployed) -> None:
    repo = git.Repo.init(pytester.path, initial_branch="main")
    repo.git.add("live", "modules")
    repo.index.commit("live configuration")
    sha = repo.head.commit.hexsha

    result = drift(
        pytester, deployed, "live/prod", "--iac-require-trunk=main", "--iac-report-json=d.json"
    )
    result.assert_outcomes(passed=2)
    vcs = json.loads((pytester.path / "d.json").read_text())["vcs"]
    assert vcs == {"commit": sha, "branch": "main", "dirty": False}

    result = drift(pytester, deployed, "live/prod", "--iac-require-trunk=trunk")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --iac-require-trunk=trunk: HEAD is on branch 'main', not 'trunk'.*"]
    )

    # An edit to a module that a live dir uses counts as a change under the live dirs.
    variables = pytester.path / "modules/network/variables.tf"
    variables.write_text(variables.read_text() + "\n")
    result = drift(pytester, deployed, "live/prod", "--iac-require-trunk=main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --iac-require-trunk=main: uncommitted changes under the live directories*",
            "  modules/network/variables.tf",
            "Commit or discard them*",
        ]
    )
    assert "::drift" not in result.stdout.str()  # nothing was planned


@contextlib.contextmanager
def tags_changed_out_of_band(
    endpoint: str, change: Callable[[list[dict[str, str]]], list[dict[str, str]]]
) -> Iterator[None]:
    """The staging bucket's tags changed with boto3, behind Terraform's back; restored after."""
    bucket, client = "acme-shop-assets-staging", s3(endpoint)
    tags = client.get_bucket_tagging(Bucket=bucket)["TagSet"]  # type: ignore[attr-defined]
    client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": change(tags)})  # type: ignore[attr-defined]
    try:
        yield
    finally:
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})  # type: ignore[attr-defined]


def test_state_drift_from_an_out_of_band_change(
    pytester: pytest.Pytester,
    live: Path,
    deployed_storage: Deployed,
    aws_provider_mirror: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tag changed with boto3 behind Terraform's back is reported as state drift.

    The whole deployed tree is checked, as CI would: only the bucket's directory fails.
    """
    deployed = deployed_storage
    for name, value in aws_env(deployed.endpoint).items():
        monkeypatch.setenv(name, value)
    with tags_changed_out_of_band(
        deployed.endpoint,
        lambda tags: [
            {"Key": t["Key"], "Value": "console" if t["Key"] == "ManagedBy" else t["Value"]}
            for t in tags
        ],
    ):
        before = code_snapshot(pytester.path)
        result = drift(
            pytester,
            deployed,
            "live",
            f"--iac-provider-mirror={aws_provider_mirror}",
            "--iac-report-json=drift.json",
            aws=True,
        )
        result.assert_outcomes(passed=5, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*drift in live/staging/storage: the plan is not empty*",
                "configuration drift (the code differs from the state): 1",
                '*tags.ManagedBy: "console" -> "terraform"',
                "state drift (objects changed outside Terraform, found by refresh): 1",
                "  module.assets.aws_s3_bucket.this  update   tags*",
                '*tags.ManagedBy: "terraform" -> "console"',
                "*pytest-iac: drift*",
                "clean  live/prod/app  *",
                "clean  live/prod/network  *",
                "clean  live/prod/storage  (configuration 0, state 0, outputs 0)",
                "clean  live/staging/app  *",
                "clean  live/staging/network  *",
                "drift  live/staging/storage  (configuration 1, state 1, outputs 0)",
            ]
        )
        report = json.loads((pytester.path / "drift.json").read_text())
        assert report["totals"] == {
            "clean": 5,
            "drift": 1,
            "never-applied": 0,
            "not-deployed": 0,
            "error": 0,
        }
        [storage] = [d for d in report["directories"] if d["status"] == "drift"]
        assert storage["name"] == "live/staging/storage"
        assert [c["address"] for c in storage["state_drift"]] == [
            "module.assets.aws_s3_bucket.this"
        ]
        assert code_snapshot(pytester.path) == before

    # A lock file that pins another release: a new init key, so init runs again and says
    # that release is not in the mirror (a cached init would have planned with 5.100.0).
    (live / "staging/storage/.terraform.lock.hcl").write_text(
        'provider "registry.terraform.io/hashicorp/aws" {\n  version = "5.99.0"\n}\n'
    )
    result = drift(
        pytester,
        deployed,
        "live/staging/storage",
        f"--iac-provider-mirror={aws_provider_mirror}",
        "-o",
        "iac_retries=0",
        aws=True,
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "terraform init failed for module */live/staging/storage",
            "*version 5.99.0 is no longer available*",
        ]
    )


def test_state_drift_of_a_clean_plan_is_named_without_reading_the_plan_back(
    pytester: pytest.Pytester,
    live: Path,
    deployed_storage: Deployed,
    aws_provider_mirror: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tag changed behind Terraform's back on a bucket whose tags the code ignores: the plan
    is clean (the check passes) and refresh found the change. The check names the object
    from the plan's own messages and says how to see its attributes: reading the plan back
    (`show -json`) would start the provider again, for a directory that passes."""
    deployed = deployed_storage
    for name, value in aws_env(deployed.endpoint).items():
        monkeypatch.setenv(name, value)
    (pytester.path / "modules/s3-bucket/ignore_tags_override.tf").write_text(
        'resource "aws_s3_bucket" "this" {\n  lifecycle {\n    ignore_changes = [tags]\n  }\n}\n'
    )
    with tags_changed_out_of_band(
        deployed.endpoint, lambda tags: [*tags, {"Key": "Owner", "Value": "console"}]
    ):
        result = drift(
            pytester,
            deployed,
            "live/staging/storage",
            f"--iac-provider-mirror={aws_provider_mirror}",
            "--iac-report-json=drift.json",
            "--iac-report-md=drift.md",
            aws=True,
        )
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            ["clean  live/staging/storage  (configuration 0, state 1, outputs 0)"]
        )
        [storage] = json.loads((pytester.path / "drift.json").read_text())["directories"]
        assert storage["state_drift"] == [
            {
                "address": "module.assets.aws_s3_bucket.this",
                "action": "update",
                "reason": None,
                "attributes": [],
                "attributes_read": False,
            }
        ]
        markdown = (pytester.path / "drift.md").read_text()
        assert "terraform plan -refresh-only" in markdown


# Speed: the pool of terraform processes, and init reused across runs


def apply_live(pytester: pytest.Pytester, name: str, config: str) -> Path:
    """A live directory with local state, applied once with plain terraform."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("needs the terraform binary to deploy the live directory")
    live = pytester.path / "live" / name
    live.mkdir(parents=True)
    (live / "main.tf").write_text(config)
    env = {**os.environ, "TF_DATA_DIR": str(pytester.path / "deploy-tfdata" / name)}
    for args in (["init"], ["apply", "-auto-approve"]):
        subprocess.run(
            [terraform, *args, "-no-color"], cwd=live, env=env, check=True, capture_output=True
        )
    return live


LOCAL_LIVE = """
terraform {
  backend "local" {}
}

resource "terraform_data" "r" {
  count = 20
  input = "%s-${count.index}"
}
"""


def live_log(result: pytest.RunResult) -> list[str]:
    """What `-s` shows live: terraform's commands and output, prefixed by the directory."""
    return [line for line in result.stderr.lines if line.startswith("[drift ")]


def first(lines: list[str], *parts: str) -> int:
    return next(i for i, line in enumerate(lines) if all(p in line for p in parts))


def test_pool_plans_directories_at_once_and_keeps_errors_per_item(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    apply_live(pytester, "a", LOCAL_LIVE % "a")
    # Other required_versions: init reads them, so each directory runs an init of its own.
    apply_live(pytester, "b", (LOCAL_LIVE % "b").replace("{}", '{}\n  required_version = ">= 1.0"'))
    broken = pytester.path / "live" / "c"  # init works, the plan cannot be made
    broken.mkdir()
    (broken / "main.tf").write_text(
        'terraform {\n  backend "local" {}\n  required_version = ">= 0.15"\n}\n\n'
        'resource "terraform_data" "x" {\n  input = var.missing\n}\n'
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-v", "-m", "drift", "live", "--iac-drift-workers=3"
    )
    result.assert_outcomes(passed=2, errors=1)
    # In the order of collection, whatever order the plans finished in.
    result.stdout.fnmatch_lines(
        [
            "live/a::drift PASSED",
            "live/b::drift PASSED",
            "live/c::drift ERROR",
            "*ERROR at setup of drift check of live/c*",
            "could not check live/c for drift:",
            "terraform plan failed for module */live/c",
            "Error: Reference to undeclared input variable",
            "  on main.tf line 7:",
            "  7:   input = var.missing",
            'An input variable with the name "missing" has not been declared.*',
        ]
    )
    # Terraform's own output, as it streamed: each directory's init started before the
    # other directory's plan had finished (its last message, the change summary).
    log = live_log(result)
    start = {d: first(log, f"[drift live/{d}] $ terraform init") for d in "ab"}
    end = {d: first(log, f"[drift live/{d}]", '"type":"change_summary"') for d in "ab"}
    assert start["a"] < end["b"], "\n".join(log)
    assert start["b"] < end["a"], "\n".join(log)
    assert leftovers(iac_home) == []

    # -k deselects before anything is planned: only the selected directory's terraform runs.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-m", "drift", "-k", "b")
    result.assert_outcomes(passed=1)
    assert {line.split("]")[0] for line in live_log(result)} == {"[drift live/b"}


def test_a_clean_directory_costs_one_plan_and_no_plan_file(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    """A check of many directories plans each once without `-out`: most are clean, and a
    plan file is a copy of the state. Only a directory whose plan changes something is
    planned again with `-out` and read back, for the table of what changes."""
    apply_live(pytester, "clean", LOCAL_LIVE % "clean")
    changed = apply_live(pytester, "changed", LOCAL_LIVE % "changed")
    (changed / "main.tf").write_text((LOCAL_LIVE % "changed").replace("count = 20", "count = 21"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-m", "drift", "live")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*drift in live/changed*", "*terraform_data.r?20?  create"])
    log = live_log(result)
    commands = {
        name: [
            line.split("$ terraform ")[1].split()[0]
            for line in log
            if line.startswith(f"[drift live/{name}] $ terraform ")
        ]
        for name in ("clean", "changed")
    }
    # The two share one init (they init alike): whichever ran it, init is not the point.
    assert [c for c in commands["clean"] if c != "init"] == ["plan"], log
    # Then read back with `show -json`, which is not logged (its output is the whole plan).
    assert [c for c in commands["changed"] if c != "init"] == ["plan", "plan"], log
    plans = [line for line in log if "$ terraform plan" in line]
    assert ["-out=" in line for line in plans].count(True) == 1, plans
    assert leftovers(iac_home) == []


def test_git_is_asked_only_for_the_reports(pytester: pytest.Pytester, iac_home: Path) -> None:
    """The commit, branch and dirty flag are for the reports: a run without them never loads
    GitPython nor waits for git before its first plan."""
    apply_live(pytester, "a", LOCAL_LIVE % "a")
    pytester.makeconftest(
        "import sys\n\n"
        "def pytest_unconfigure(config):\n"
        "    open('git-loaded', 'w').write(str('git' in sys.modules))\n"
    )
    git.Repo.init(pytester.path, initial_branch="trunk")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "drift", "live")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "git-loaded").read_text() == "False"

    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "drift", "live", "--iac-report-json=drift.json"
    )
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "drift.json").read_text())
    assert report["vcs"] == {"commit": None, "branch": "trunk", "dirty": True}


NAMED_STATE_LIVE = """
terraform {
  backend "local" {}
}

resource "terraform_data" "r" {
  count = 3
  input = "%s-${count.index}"
}
"""


MODULE_CALL = """
module "part" {
  source = "../../modules/part"
}
"""


def apply_with_own_state(
    pytester: pytest.Pytester, name: str, config: str = "", *, in_block: bool = False
) -> Path:
    """A live directory that names a state path of its own, applied: in its
    `backend.tfbackend`, or with `in_block`, in its backend block (relative to the
    directory, as terraform reads it: `../../states/NAME.tfstate`, outside it)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("needs the terraform binary to deploy the live directory")
    live = pytester.path / "live" / name
    live.mkdir(parents=True)
    main, init = NAMED_STATE_LIVE % name + config, ["init"]
    if in_block:
        path = f'backend "local" {{\n    path = "../../states/{name}.tfstate"\n  }}'
        main = main.replace('backend "local" {}', path)
    else:
        state = pytester.path / "states" / f"{name}.tfstate"
        (live / "backend.tfbackend").write_text(f'path = "{state}"\n')
        init.append("-backend-config=backend.tfbackend")
    (live / "main.tf").write_text(main)
    env = {**os.environ, "TF_DATA_DIR": str(pytester.path / "deploy-tfdata" / name)}
    for args in (init, ["apply", "-auto-approve"]):
        subprocess.run(
            [terraform, *args, "-no-color"], cwd=live, env=env, check=True, capture_output=True
        )
    return live


@pytest.mark.parametrize("in_block", [False, True], ids=["backend-file", "backend-block"])
def test_directories_that_differ_only_in_their_state_path_share_one_init(
    pytester: pytest.Pytester, iac_home: Path, engine: str, in_block: bool
) -> None:
    """As real live directories do, each names its own state (here a local path; an S3 key
    alike): one init serves all, and each is planned against its own state. A plan against
    another's state would replace every resource (the inputs carry the directory's name).

    In the backend block (the commonest layout), the path is relative to the directory and
    outside it: the check finds the state where terraform run there does, and its copy's
    block loses its plain strings to `-backend-config`, the same configuration."""
    lives = [apply_with_own_state(pytester, n, in_block=in_block) for n in "abc"]
    changed = lives[2] / "main.tf"
    changed.write_text(changed.read_text().replace("count = 3", "count = 4"))
    states = {p: p.read_bytes() for p in (pytester.path / "states").iterdir()}
    code = {live: tree_snapshot(live) for live in lives}
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-m", "drift", "live", f"--iac-binary={engine}"
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*drift in live/c: the plan is not empty (configuration drift 1, *",
            "  terraform_data.r?3?  create",
        ]
    )
    log = live_log(result)
    assert sum("$ terraform init" in line for line in log) == 1, log
    assert sum("init shared from" in line for line in log) == 2, log
    assert {p: p.read_bytes() for p in (pytester.path / "states").iterdir()} == states
    assert {live: tree_snapshot(live) for live in lives} == code
    assert leftovers(iac_home) == []

    # The re-run: every directory from the cache, each still against its own state.
    rerun = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-m", "drift", "live", f"--iac-binary={engine}"
    )
    rerun.assert_outcomes(passed=2, failed=1)
    assert not any("$ terraform init" in line for line in live_log(rerun))


def test_a_relative_state_path_in_a_backend_file_is_the_directory_s(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    """A state path in a `*.tfbackend` file is relative to the directory too; and what
    terraform says about the code points at the user's lines, though the copy's backend
    block lost its settings."""
    live = apply_with_own_state(pytester, "a")
    state = pytester.path / "states" / "a.tfstate"
    (live / "backend.tfbackend").write_text('path = "../../states/a.tfstate"\n')
    broken = apply_with_own_state(pytester, "b", in_block=True)
    text = (broken / "main.tf").read_text() + '\noutput "broken" {\n  value = var.missing\n}\n'
    (broken / "main.tf").write_text(text)
    line = text.splitlines().index("  value = var.missing") + 1
    before = state.read_bytes()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "drift", "live")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*Reference to undeclared input variable*", f"  on main.tf line {line}:"]
    )
    assert state.read_bytes() == before
    assert leftovers(iac_home) == []


@pytest.mark.parametrize("fault", ["hash", "modules"])
def test_a_shared_init_that_fails_the_plan_is_made_again(
    pytester: pytest.Pytester, iac_home: Path, fault: str
) -> None:
    """Fault injection into the entry to share. `hash`: its backend no longer matches the
    code (as with an engine whose check covers the `-backend-config` settings too): init
    runs, and no later check shares. `modules`: it lacks what this directory's own init
    would have made (as a provider that only its state names): init runs, plan again."""
    part = pytester.path / "modules" / "part"
    part.mkdir(parents=True)
    (part / "main.tf").write_text('resource "terraform_data" "p" {\n  input = "part"\n}\n')
    for name in ("a", "b", "c"):
        live = apply_with_own_state(pytester, name, MODULE_CALL)
        # A state left beside the code (the backend names another path): the check copies
        # it along, and the second init must not take it for state to migrate.
        stale = pytester.path / "states" / f"{name}.tfstate"
        (live / "terraform.tfstate").write_bytes(stale.read_bytes())
    args = ("-p", "no:cacheprovider", "-s", "-m", "drift", "--iac-drift-workers=1")
    pytester.runpytest_subprocess(*args, "live/a").assert_outcomes(passed=1)
    for entry in cache_entries(iac_home):  # a's own, and the one to share
        backend_file = entry / "tfdata" / "terraform.tfstate"
        if fault == "hash":
            data = json.loads(backend_file.read_text())
            data["backend"]["hash"] += 1
            backend_file.write_text(json.dumps(data))
        else:
            (entry / "tfdata" / "modules" / "modules.json").unlink()

    result = pytester.runpytest_subprocess(*args, "live/b", "live/c")
    result.assert_outcomes(passed=2)
    log = live_log(result)
    assert sum("$ terraform init" in line for line in log) == 2, log
    refused = [line for line in log if "Backend initialization required: init runs" in line]
    failed = [line for line in log if "the plan failed after a shared init" in line]
    # hash: b's plan is refused, and c shares no more; modules: both plans fail, both init.
    assert (len(refused), len(failed)) == ((1, 0) if fault == "hash" else (0, 2)), log
    assert leftovers(iac_home) == []


def test_checks_run_go_with_a_lazier_collector_unless_the_run_sets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("needs the terraform binary")
    engine = Terraform(find_engine(terraform), Settings(), tmp_path / "config")
    monkeypatch.delenv("GOGC", raising=False)
    assert plan_environment(engine, None) == {"GOGC": "400"}
    assert plan_environment(engine, {"GOGC": "50"})["GOGC"] == "50"
    monkeypatch.setenv("GOGC", "off")
    assert "GOGC" not in plan_environment(engine, None)
    configured = Terraform(find_engine(terraform), Settings(env={"GOGC": "100"}), tmp_path / "c")
    assert "GOGC" not in plan_environment(configured, None)


def test_each_xdist_worker_plans_its_item_and_the_next_at_once(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    """A worker knows only the item it runs and the next one: it plans both at once (its
    pool has two threads at least, whatever its share of the CPUs), so that one check's
    own work overlaps the other's terraform, and reports each item with its own result."""
    for name in "abcd":
        apply_live(pytester, name, LOCAL_LIVE % name)
    changed = pytester.path / "live" / "c" / "main.tf"
    changed.write_text((LOCAL_LIVE % "c").replace("count = 20", "count = 21"))
    # xdist shows no worker's live output: each worker logs it to a file of its own.
    pytester.makeconftest(
        """
        def pytest_configure(config):
            worker = getattr(config, "workerinput", {}).get("workerid")
            if worker:
                config.option.log_file = worker + ".log"
                config.option.log_file_level = "INFO"
        """
    )
    # 4 items, 2 workers: xdist sends each worker two items in a row, a and b to one.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "xdist", "-n", "2", "-s", "-m", "drift", "live"
    )
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*drift in live/c*", "*terraform_data.r?20?  create"])
    overlapping = 0
    for log in (pytester.path / "gw0.log", pytester.path / "gw1.log"):
        lines = log.read_text().splitlines()
        names = sorted({d for d in "abcd" if any(f"[drift live/{d}]" in x for x in lines)})
        assert len(names) == 2, lines
        start = {d: first(lines, f"[drift live/{d}] $ terraform plan") for d in names}
        end = {d: first(lines, f"[drift live/{d}]", '"type":"change_summary"') for d in names}
        x, y = names
        overlapping += start[x] < end[y] and start[y] < end[x]
    assert overlapping == 2
    assert leftovers(iac_home) == []


def cache_entries(iac_home: Path) -> list[Path]:
    return sorted(p for p in iac_home.glob("projects/*/init-cache/*") if p.is_dir())


def test_directories_that_init_alike_share_one_init(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    """a and b differ only where init does not read (resources): one init serves both; c
    requires another Terraform version, which init checks: it gets an init of its own."""
    apply_live(pytester, "a", LOCAL_LIVE % "a")
    b = apply_live(pytester, "b", LOCAL_LIVE % "b")
    (b / "main.tf").write_text((LOCAL_LIVE % "b").replace("count = 20", "count = 21"))
    c_config = (LOCAL_LIVE % "c").replace("{}", '{}\n  required_version = ">= 1.0"')
    apply_live(pytester, "c", c_config)
    states = {d: tree_snapshot(pytester.path / "live" / d) for d in "abc"}

    def run() -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-m", "drift", "live")

    def inits(result: pytest.RunResult) -> list[str]:
        return [line.split("]")[0] for line in live_log(result) if "$ terraform init" in line]

    first_run = run()
    # b's plan is b's own, though its init was a's (or a's was b's).
    first_run.assert_outcomes(passed=2, failed=1)
    first_run.stdout.fnmatch_lines(["drift  live/b  (configuration 1, state 0, outputs 0)"])
    assert len(inits(first_run)) == 2, "\n".join(live_log(first_run))
    assert "[drift live/c" in inits(first_run)
    assert len(cache_entries(iac_home)) == 2

    rerun = run()
    rerun.assert_outcomes(passed=2, failed=1)
    assert inits(rerun) == []
    assert {d: tree_snapshot(pytester.path / "live" / d) for d in "abc"} == states
    assert leftovers(iac_home) == []


def test_init_is_reused_until_the_lock_file_changes(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    live = apply_live(pytester, "dev", LOCAL_LIVE % "dev")
    state = tree_snapshot(live)

    def run() -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-m", "drift", "live")

    first_run = run()
    first_run.assert_outcomes(passed=1)
    assert any("$ terraform init" in line for line in live_log(first_run))
    [entry] = cache_entries(iac_home)
    # The entry holds what init made, and never a plan, a state or a backend settings file.
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*")) == [
        "tfdata",
        "tfdata/terraform.tfstate",
    ]
    assert json.loads((entry / "tfdata/terraform.tfstate").read_text())["backend"]["type"] == (
        "local"
    )
    assert (entry / "tfdata/terraform.tfstate").stat().st_mode & 0o777 == 0o600
    assert entry.stat().st_mode & 0o777 == 0o700

    rerun = run()
    rerun.assert_outcomes(passed=1)
    log = live_log(rerun)
    assert not any("$ terraform init" in line for line in log), "\n".join(log)
    assert any(f"init reused from {entry}" in line for line in log)

    # A changed lock file is a new key: init runs again and reads it (here: it is broken).
    (live / ".terraform.lock.hcl").write_text('provider "registry.terraform.io/x/y" {\n')
    changed = run()
    changed.assert_outcomes(errors=1)
    assert any("$ terraform init" in line for line in live_log(changed))
    changed.stdout.fnmatch_lines(
        ["terraform init failed for module */live/dev", "*failed to read dependency lock file*"]
    )
    (live / ".terraform.lock.hcl").unlink()
    assert tree_snapshot(live) == state
    assert leftovers(iac_home) == []
    assert not list(iac_home.rglob("*.tfplan"))


def test_init_is_reused_until_a_backend_setting_changes(
    pytester: pytest.Pytester, live: Path, deployed: Deployed, iac_home: Path
) -> None:
    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "-s",
            "-m",
            "drift",
            f"--iac-backend-config={deployed.backend_file}",
            "live/prod/network",
            *args,
        )

    def inits(result: pytest.RunResult) -> int:
        return sum("$ terraform init" in line for line in live_log(result))

    first_run = run()
    first_run.assert_outcomes(passed=1)
    assert inits(first_run) == 1
    entries = cache_entries(iac_home)  # this directory's, and one to share (`SharedInit`)
    assert len(entries) == 2
    for entry in entries:
        assert not list(entry.rglob("*.tfbackend"))  # the run's settings file is not kept
        backend = json.loads((entry / "tfdata/terraform.tfstate").read_text())["backend"]
        assert backend["config"]["secret_key"] == "testing"  # what plan needs: hence 0600
        assert (entry / "tfdata/terraform.tfstate").stat().st_mode & 0o777 == 0o600

    rerun = run()
    rerun.assert_outcomes(passed=1)
    assert inits(rerun) == 0

    # The directory's own backend file names another state: no init (only a plain string
    # differs, which the shared entry takes), and the plan is made against that state.
    tfbackend = live / "prod/network/backend.tfbackend"
    tfbackend.write_text('key = "prod/elsewhere/terraform.tfstate"\n')
    moved = run()
    assert inits(moved) == 0
    assert any("init shared from" in line for line in live_log(moved))
    moved.assert_outcomes(failed=1)
    # A key where no state is: never applied, says the check, rather than plain drift.
    moved.stdout.fnmatch_lines(
        ["never-applied  live/prod/network  (configuration 4, state 0, outputs 2)"]
    )
    tfbackend.write_text('key = "prod/network/terraform.tfstate"\n')

    # A run-wide setting (after the file's): a bucket that does not exist.
    missing = run("--iac-backend-config=bucket=no-such-bucket", "-o", "iac_retries=0")
    assert inits(missing) == 1
    missing.assert_outcomes(errors=1)
    missing.stdout.fnmatch_lines(["terraform init failed for module */live/prod/network"])

    back = run()
    back.assert_outcomes(passed=1)
    assert inits(back) == 0  # the first entry is still there, and still right
    assert leftovers(iac_home) == []
    assert not list(iac_home.rglob("*.tfplan"))


@pytest.mark.parametrize(
    "markexpr", ["not drift", "not drift and not sandbox", "slow or not (drift or x)"]
)
def test_a_run_that_cannot_select_drift_finds_no_live_dirs_and_guards_no_trunk(
    pytester: pytest.Pytester, markexpr: str
) -> None:
    (pytester.path / "live" / "app").mkdir(parents=True)
    (pytester.path / "live" / "app" / "main.tf").write_text(LOCAL_LIVE % "app")
    pytester.makeini("[pytest]\niac_require_trunk = main\niac_live_dirs = live\n")
    pytester.makepyfile(
        test_plain="import sys\n\ndef test_plain():\n    assert 'git' not in sys.modules\n"
    )
    with git.Repo.init(pytester.path, initial_branch="feature") as repo:
        repo.git.add(all=True)
        repo.index.commit("a feature")

    # Neither discovery, nor GitPython, nor a refusal: this run plans nothing.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", markexpr)
    result.assert_outcomes(passed=1)

    # A drift run on this branch is refused, as before.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "drift")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --iac-require-trunk=main: HEAD is on branch 'feature'*"])


def test_a_drift_run_that_finds_nothing_says_where_it_looked(pytester: pytest.Pytester) -> None:
    (pytester.path / "live").mkdir()
    (pytester.path / "live" / "README.md").write_text("environments will go here\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "drift", "live")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(
        [
            "pytest-iac: -m drift found no live root module (looked under: live). A live root "
            "is a directory of .tf (or .tf.json) files*Name the live directories*",
            "*no tests ran*",
        ]
    )


def test_a_new_environment_is_reported_not_passed_over(pytester: pytest.Pytester) -> None:
    # live/qa/app: added, not deployed yet (no backend, no state); live/qa/db: a backend
    # that holds no state yet (never applied).
    app, db = pytester.path / "live/qa/app", pytester.path / "live/qa/db"
    app.mkdir(parents=True)
    (app / "main.tf").write_text('resource "terraform_data" "x" {\n  input = "qa"\n}\n')
    db.mkdir(parents=True)
    (db / "main.tf").write_text(LOCAL_LIVE % "db")
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-m",
        "drift",
        "live",
        "--iac-report-md=d.md",
        "--iac-report-json=d.json",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "not deployed: no backend and no state in live/qa/app, a root module under a live "
            "path named for this run*Deploy it*iac_live_exclude*iac_skip_not_deployed = true*",
            "never applied: the state of live/qa/db holds no resource, so its plan creates "
            "everything (configuration drift 20, *). Apply it, or check that its backend "
            "settings point at its state.",
            "*pytest-iac: drift*",
            "not-deployed  live/qa/app  (no backend and no state)",
            "never-applied  live/qa/db  (configuration 20, state 0, outputs 0)",
        ]
    )
    report = json.loads((pytester.path / "d.json").read_text())
    assert report["totals"] == {
        "clean": 0,
        "drift": 0,
        "never-applied": 1,
        "not-deployed": 1,
        "error": 0,
    }
    markdown = (pytester.path / "d.md").read_text()
    assert "**0 clean, 0 drifted, 1 never applied, 1 not deployed, 0 could not be" in markdown
    assert "Not deployed: no backend and no state" in markdown
    assert "Never applied: its state holds no resource" in markdown

    # Opted out, the new environment is skipped, and -rs says why.
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-m", "drift", "-rs", "-o", "iac_skip_not_deployed=true", "live"
    )
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [1] live/qa/app:1: not deployed: no backend and no state "
            "(ini iac_skip_not_deployed)"
        ]
    )

    # Named by nobody, a module without backend or state may be a reusable one: not a root.
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "drift", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["live/qa/db::drift", "1 test collected*"])


def test_a_drift_working_directory_is_private(tmp_path: Path) -> None:
    """It holds the plan file (a copy of the state) and the backend's settings: only its
    owner may enter it, as a sandbox deployment's working directory."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("needs the terraform binary")
    live = tmp_path / "live"
    live.mkdir()
    (live / "main.tf").write_text(LOCAL_LIVE % "private")
    modes: list[int] = []

    def remove(directory: Path) -> None:
        modes.append(stat.S_IMODE(directory.stat().st_mode))
        shutil.rmtree(directory)

    engine = Terraform(find_engine(terraform), Settings(), tmp_path / "config")
    result = check_drift(engine, live, tmp_path / "runs" / "drift" / "live", remove=remove)
    assert result.status == "never-applied", result.error
    assert modes == [0o700]

"""The promotion view: module versions per environment, read statically from a live tree.

The unit tier reads a dev/staging/prod tree with no terraform; the user's view goes through
pytester (`pytest -m promotion live/`), and the two-repository example runs drift and
promotion together with real Terraform.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import two_repos

from pytest_iac.promotion import read_promotion

MODULES = "git::https://example.com/acme/infrastructure-modules.git"
SHA = "4f1c2e0b9a7d6c5e3f2a1b0c9d8e7f6a5b4c3d2e"


def live_root(directory: Path, *calls: str, json_calls: str | None = None) -> None:
    """A live root module with local state and the given module blocks."""
    directory.mkdir(parents=True)
    (directory / "main.tf").write_text('terraform {\n  backend "local" {}\n}\n' + "\n".join(calls))
    if json_calls is not None:
        (directory / "modules.tf.json").write_text(json_calls)


def call(name: str, source: str, version: str | None = None) -> str:
    version_line = f'  version = "{version}"\n' if version else ""
    return f'module "{name}" {{\n  source = "{source}"\n{version_line}  name = "x"\n}}\n'


@pytest.fixture
def live(tmp_path: Path) -> Path:
    """dev, staging and prod, promoted in order: everything pinned, nothing ahead."""
    live = tmp_path / "live"
    for env, vpc, db in (("dev", "v1.10.0", "v2.1.0"), ("staging", "v1.9.0", "v2.0.0")):
        live_root(live / env / "network", call("vpc", f"{MODULES}//vpc?ref={vpc}"))
        live_root(live / env / "data", call("db", f"{MODULES}//db?ref={db}"))
    live_root(
        live / "prod" / "network",
        call("vpc", "git::ssh://git@example.com/acme/infrastructure-modules.git//vpc?ref=v1.9.0"),
    )
    live_root(live / "prod" / "data", call("db", f"{MODULES}//db?ref=v2.0.0"))
    return live


def test_the_matrix_holds_every_pin_in_promotion_order(live: Path) -> None:
    view = read_promotion([live], base=live.parent, environments=["dev", "staging", "prod"])
    assert view.ok, [m.failures for m in view.modules]
    assert {m.name: m.versions() for m in view.modules} == {
        "infrastructure-modules//db": {
            "dev": ["v2.1.0"],
            "staging": ["v2.0.0"],
            "prod": ["v2.0.0"],
        },
        # https and ssh URLs of one repository are one module
        "infrastructure-modules//vpc": {
            "dev": ["v1.10.0"],
            "staging": ["v1.9.0"],
            "prod": ["v1.9.0"],
        },
    }


def test_prod_ahead_of_staging_fails_naming_dirs_versions_and_rule(live: Path) -> None:
    # v1.10.0 is newer than v1.9.0 (semantic versions, not text)
    (live / "prod" / "network" / "main.tf").write_text(
        call("vpc", f"{MODULES}//vpc?ref=v1.10.0") + 'terraform {\n  backend "local" {}\n}\n'
    )
    view = read_promotion([live], base=live.parent, environments=["dev", "staging", "prod"])
    (vpc,) = [m for m in view.modules if m.name.endswith("//vpc")]
    assert vpc.failures == [
        "out of order: live/prod/network (prod) runs v1.10.0, newer than v1.9.0 in "
        "live/staging/network (staging); order dev < staging < prod. Rule: no environment runs "
        "a newer version than an environment before it in the promotion order."
    ]
    assert all(m.ok for m in view.modules if m is not vpc)


def test_unpinned_sources_fail_and_say_why(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live_root(
        live / "dev" / "app",
        call("branch", f"{MODULES}//app?ref=main"),
        call("nothing", f"{MODULES}//cache"),
        call("floating", "github.com/acme/queue//q?ref=v2"),
        call("constraint", "terraform-aws-modules/vpc/aws", "~> 5.0"),
        call("latest", "terraform-aws-modules/iam/aws"),
        call("exact", "terraform-aws-modules/s3-bucket/aws", "4.1.2"),
        call("commit", f"{MODULES}//dns?ref={SHA}"),
    )
    view = read_promotion([live], base=tmp_path, environments=["dev"])
    failures = {m.name: m.failures for m in view.modules}
    assert failures["terraform-aws-modules/s3-bucket/aws"] == []
    assert failures["infrastructure-modules//dns"] == []
    assert failures["infrastructure-modules//app"] == [
        f"not pinned: live/dev/app (dev, module.branch) uses '{MODULES}//app?ref=main': ref "
        "'main' is neither a release tag (MAJOR.MINOR.PATCH) nor a commit SHA: a branch, or a "
        "tag that may move. Rule: remote modules are pinned to an immutable version (a release "
        "tag, a commit SHA, an exact registry version)."
    ]
    assert "no ?ref=: the default branch" in failures["infrastructure-modules//cache"][0]
    assert "names no patch release" in failures["queue//q"][0]
    assert (
        "(version '~> 5.0'): version '~> 5.0' is a constraint"
        in failures["terraform-aws-modules/vpc/aws"][0]
    )
    assert (
        "no version: init takes the newest release" in failures["terraform-aws-modules/iam/aws"][0]
    )


def test_commit_shas_are_shown_and_never_ordered(live: Path) -> None:
    (live / "prod" / "data" / "main.tf").write_text(
        call("db", f"{MODULES}//db?ref={SHA}") + 'terraform {\n  backend "local" {}\n}\n'
    )
    view = read_promotion([live], base=live.parent, environments=["dev", "staging", "prod"])
    (db,) = [m for m in view.modules if m.name.endswith("//db")]
    assert db.ok
    assert db.versions()["prod"] == [SHA]
    assert (
        f"cannot be ordered: live/prod/data (prod) runs {SHA} and live/staging/data (staging) "
        f"runs v2.0.0: {SHA} is a commit SHA: commits have no order without the repository"
    ) in db.notes


def test_local_modules_are_followed_and_listed_as_local(tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "_shared" / "stack").mkdir(parents=True)
    (live / "_shared" / "stack" / "main.tf").write_text(call("vpc", f"{MODULES}//vpc?ref=develop"))
    live_root(live / "dev" / "app", call("stack", "../../_shared/stack"))
    view = read_promotion([live], base=tmp_path, environments=["dev"])
    by_name = {m.name: m for m in view.modules}
    assert by_name["live/_shared/stack"].local
    assert by_name["live/_shared/stack"].versions() == {"dev": ["local"]}
    # a remote call inside a local module belongs to the live root that uses it
    (failure,) = by_name["infrastructure-modules//vpc"].failures
    assert failure.startswith("not pinned: live/dev/app (dev, module.stack.module.vpc) uses")


def test_json_configuration_and_sources_that_are_not_literals(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live_root(
        live / "prod" / "app",
        'variable "ref" {\n  type = string\n}\n',
        json_calls=json.dumps(
            {
                "module": {
                    "vpc": {"source": f"{MODULES}//vpc?ref=v1.2.3", "name": "x"},
                    "dynamic": {"source": "${var.ref}"},
                }
            }
        ),
    )
    view = read_promotion([live], base=tmp_path, environments=["prod"])
    by_name = {m.name: m for m in view.modules}
    assert by_name["infrastructure-modules//vpc"].versions() == {"prod": ["v1.2.3"]}
    (failure,) = by_name["live/prod/app: dynamic"].failures
    assert failure == (
        "unreadable: live/prod/app (prod, module.dynamic): its source is not a literal "
        "string: no version to read without Terraform"
    )


def test_environments_without_the_ini_setting(live: Path) -> None:
    view = read_promotion([live], base=live.parent)
    assert view.environments == ["dev", "staging", "prod"]  # the usual order of these names
    assert view.ordered
    (live / "aws").mkdir()  # a usual name deeper down is the environment
    (live / "prod").rename(live / "aws" / "prod")
    view = read_promotion([live], base=live.parent)
    assert view.environments == ["dev", "staging", "prod"]
    for env in ("dev", "staging"):
        (live / env).rename(live / f"blue-{env}")
    view = read_promotion([live], base=live.parent)
    assert view.environments == ["blue-dev", "blue-staging", "prod"]  # first components
    assert not view.ordered
    assert all("promotion order unknown" in m.notes[0] for m in view.modules)


def test_a_directory_in_no_named_environment_is_reported(live: Path) -> None:
    view = read_promotion([live], base=live.parent, environments=["staging", "prod"])
    assert view.unplaced == ["live/dev/data", "live/dev/network"]
    assert all("?" in m.versions() for m in view.modules)


# The user's view


PYTEST_INI = "[pytest]\niac_environments = dev staging prod\n"


def test_pytest_m_promotion_collects_one_item_per_module(
    pytester: pytest.Pytester, live: Path
) -> None:
    tree = pytester.path / "live"
    live.rename(tree)
    pytester.makeini(PYTEST_INI)
    (tree / "prod" / "network" / "main.tf").write_text(
        call("vpc", f"{MODULES}//vpc?ref=v1.10.0") + 'terraform {\n  backend "local" {}\n}\n'
    )
    (tree / "dev" / "data" / "main.tf").write_text(
        call("db", f"{MODULES}//db?ref=main") + 'terraform {\n  backend "local" {}\n}\n'
    )
    report_json, report_md = pytester.path / "r.json", pytester.path / "r.md"
    result = pytester.runpytest(
        "-m",
        "promotion",
        "live",
        f"--iac-report-json={report_json}",
        f"--iac-report-md={report_md}",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*module example.com/acme/infrastructure-modules//db: 1 problem(s)",
            "- not pinned: live/dev/data (dev, module.db) uses *?ref=main': ref 'main' is neither*",
            "versions: dev: main; staging: v2.0.0; prod: v2.0.0",
            "*module example.com/acme/infrastructure-modules//vpc: 1 problem(s)",
            "- out of order: live/prod/network (prod) runs v1.10.0, newer than v1.9.0 in *",
            "*pytest-iac: promotion*",
            "environments: dev < staging < prod (order from ini iac_environments)",
            "module                       dev      staging  prod     result",
            "infrastructure-modules//db   main     v2.0.0   v2.0.0   FAILED",
            "infrastructure-modules//vpc  v1.10.0  v1.9.0   v1.10.0  FAILED",
            "FAILED live::promotion[[]infrastructure-modules//db[]] - *",
        ]
    )
    data = json.loads(report_json.read_text())
    assert data["ok"] is False
    assert [m["versions"] for m in data["promotion"]["modules"]] == [
        {"dev": ["main"], "staging": ["v2.0.0"], "prod": ["v2.0.0"]},
        {"dev": ["v1.10.0"], "staging": ["v1.9.0"], "prod": ["v1.10.0"]},
    ]
    markdown = report_md.read_text()
    assert "| `infrastructure-modules//vpc` | `v1.10.0` | `v1.9.0` | `v1.10.0` | ❌ |" in markdown
    assert "- ❌ out of order: live/prod/network (prod) runs v1.10.0" in markdown
    assert "## Drift check" not in markdown  # no drift run, no empty drift section


def test_promotion_items_are_collected_only_when_asked_for(
    pytester: pytest.Pytester, live: Path
) -> None:
    live.rename(pytester.path / "live")
    result = pytester.runpytest("live", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["no tests collected*"])
    assert "promotion" not in result.stdout.str()


def test_two_repositories_drift_and_promotion_side_by_side(pytester: pytest.Pytester) -> None:
    # The example: live environments pin tags of a modules repository through git::file://.
    make = two_repos()
    live = make.build(pytester.path)[1]
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        str(live), "-m", "drift or promotion", f"--iac-report-json={report}", "-p", "no:randomly"
    )
    # nothing is deployed yet: every live dir's plan creates its module (drift)
    result.assert_outcomes(passed=2, failed=6)
    data = json.loads(report.read_text())
    assert len(data["directories"]) == 6
    assert {m["module"]: m["versions"] for m in data["promotion"]["modules"]} == {
        f"infrastructure-modules//{module}": {
            env: [pins[module]] for env, pins in make.PINS.items()
        }
        for module in ("app", "network")
    }


def test_under_xdist_the_controller_shows_the_matrix(pytester: pytest.Pytester, live: Path) -> None:
    live.rename(pytester.path / "live")
    pytester.makeini(PYTEST_INI)
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess(
        "-m", "promotion", "live", "-n", "2", f"--iac-report-json={report}"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["infrastructure-modules//vpc  v1.10.0  v1.9.0   v1.9.0  ok"])
    assert json.loads(report.read_text())["ok"] is True


def test_a_file_the_reader_cannot_read_fails_rather_than_hides_its_calls(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live_root(live / "dev" / "app", call("vpc", f"{MODULES}//vpc?ref=v1.0.0"))
    (live / "dev" / "app" / "broken.tf").write_text('module "db" {\n  source = "x\n}\n')
    view = read_promotion([live], base=tmp_path, environments=["dev"])
    by_name = {m.name: m for m in view.modules}
    assert by_name["infrastructure-modules//vpc"].ok
    (failure,) = by_name["live/dev/app: files"].failures
    assert failure.startswith("unreadable: live/dev/app (dev): ")
    assert "broken.tf" in failure
    assert failure.endswith("the module calls in that file are unknown")


def test_live_trees_named_in_the_ini_file(pytester: pytest.Pytester, live: Path) -> None:
    live.rename(pytester.path / "live")
    pytester.makeini(PYTEST_INI + "iac_live_dirs = live\n")
    pytester.makepyfile(test_other="def test_other(): pass")
    result = pytester.runpytest("-m", "promotion", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "live::promotion[[]infrastructure-modules//db[]]",
            "live::promotion[[]infrastructure-modules//vpc[]]",
            "2/3 tests collected (1 deselected)*",
        ]
    )


def test_an_expression_that_cannot_select_promotion_reads_no_live_tree(
    pytester: pytest.Pytester, live: Path
) -> None:
    # As for drift: `-m "not promotion"` names the marker only to leave its items out.
    live.rename(pytester.path / "live")
    pytester.makeini(PYTEST_INI + "iac_live_dirs = live\n")
    pytester.makepyfile(test_other="def test_other(): pass")
    result = pytester.runpytest("-m", "not promotion")
    result.assert_outcomes(passed=1)
    assert "deselected" not in result.stdout.str()  # no promotion item was collected
    assert "infrastructure-modules" not in result.stdout.str()  # nor a matrix shown


def test_credentials_in_a_source_appear_in_no_failure_nor_report(tmp_path: Path) -> None:
    # Terraform takes a password in a git URL and a private key in `sshkey=`: secrets.
    token, key = "ghp_s3cr3tT0ken", "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEU"
    live = tmp_path / "live"
    live_root(
        live / "dev" / "app",
        call("https", f"git::https://ci:{token}@example.com/acme/m.git//a?ref=main"),
        call("ssh", f"git::ssh://git@example.com/acme/m.git//b?ref=main&sshkey={key}"),
    )
    view = read_promotion([live], base=tmp_path, environments=["dev"])
    shown = json.dumps(view.to_dict()) + "".join(f for m in view.modules for f in m.failures)
    assert "not pinned" in shown
    assert token not in shown
    assert key not in shown
    assert "https://ci:<sensitive>@example.com" in shown
    assert "sshkey=<sensitive>" in shown

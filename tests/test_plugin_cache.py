"""The plugin cache's lock: inits that only read the cache share it, any other holds it alone."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from pytest_iac import Settings, Terraform, find_engine, plugin_cache, tfconfig
from tests.test_init_cache import write_tree

AWS = "registry.terraform.io/hashicorp/aws"
USES_AWS = (
    'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws" }\n  }\n}\n'
    'resource "aws_s3_bucket" "b" {}\n'
)
LOCKED = f'provider "{AWS}" {{\n  version = "5.100.0"\n  hashes = ["h1:x"]\n}}\n'


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A plugin cache holding hashicorp/aws 5.100.0 for linux_amd64."""
    (tmp_path / "cache" / AWS / "5.100.0" / "linux_amd64").mkdir(parents=True)
    return tmp_path / "cache"


def why(cache: Path, module: Path, *args: str, **env: str) -> str | None:
    return plugin_cache.may_install(cache, module, ["init", *args], env, lambda: "linux_amd64")


def test_an_init_of_pinned_cached_providers_only_reads_the_cache(
    tmp_path: Path, cache: Path
) -> None:
    write_tree(
        tmp_path / "live",
        {
            "main.tf": 'module "m" { source = "../modules/m" }\nresource "terraform_data" "x" {}\n',
            ".terraform.lock.hcl": LOCKED,
        },
    )
    write_tree(tmp_path / "modules" / "m", {"main.tf": USES_AWS})
    assert why(cache, tmp_path / "live", "-input=false", "-backend-config=x.tfbackend") is None
    assert tfconfig.locked_providers(tmp_path / "live") == {AWS: "5.100.0"}


def test_only_the_builtin_provider_needs_no_lock_file(tmp_path: Path, cache: Path) -> None:
    write_tree(tmp_path / "live", {"main.tf": 'resource "terraform_data" "x" {}\n'})
    assert why(cache, tmp_path / "live") is None


@pytest.mark.parametrize(
    ("files", "args", "env", "reason"),
    [
        ({"main.tf": USES_AWS}, (), {}, f"{AWS} is not pinned in .terraform.lock.hcl"),
        (
            {"main.tf": USES_AWS, ".terraform.lock.hcl": LOCKED.replace("5.100.0", "5.99.0")},
            (),
            {},
            f"{AWS} 5.99.0 (linux_amd64) is not in the plugin cache",
        ),
        (
            {"main.tf": USES_AWS, ".terraform.lock.hcl": "provider {"},
            (),
            {},
            ".terraform.lock.hcl could not be read",
        ),
        ({"main.tf": USES_AWS, ".terraform.lock.hcl": LOCKED}, ("-upgrade",), {}, "init -upgrade"),
        (
            {"main.tf": USES_AWS, ".terraform.lock.hcl": LOCKED},
            (),
            {"TF_PLUGIN_CACHE_DIR": "/elsewhere"},
            "TF_PLUGIN_CACHE_DIR is set",
        ),
        (
            {"main.tf": 'module "vpc" {\n  source = "terraform-aws-modules/vpc/aws"\n}\n'},
            (),
            {},
            'module "vpc" in {live} is not local',
        ),
        (
            {"main.tf": USES_AWS, ".terraform.lock.hcl": LOCKED, "tests/a.tftest.hcl": ""},
            (),
            {},
            "test files (init installs what they use)",
        ),
        ({"main.tf": 'resource "aws_s3_bucket" "b" {\n  bucket = "x\n}\n'}, (), {}, "{live}/main"),
    ],
    ids=["unpinned", "not-cached", "bad-lock", "upgrade", "env", "registry", "tests", "unreadable"],
)
def test_any_init_that_may_install_holds_the_cache_alone(
    tmp_path: Path,
    cache: Path,
    files: dict[str, str],
    args: tuple[str, ...],
    env: dict[str, str],
    reason: str,
) -> None:
    live = tmp_path / "live"
    write_tree(live, files)
    found = why(cache, live, *args, **env)
    assert found is not None
    assert found.startswith(reason.format(live=live.resolve()))


@pytest.fixture
def mirror() -> Path:
    for entry in os.environ.get("PYTEST_IAC_PROVIDER_MIRROR", "").split(os.pathsep):
        if entry and (Path(entry) / AWS).is_dir():
            return Path(entry)
    pytest.skip("no provider mirror with hashicorp/aws: set PYTEST_IAC_PROVIDER_MIRROR")


def test_concurrent_inits_share_a_cached_provider_and_install_nothing(
    tmp_path: Path, mirror: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first init installs hashicorp/aws into the cache alone; two more, pinned by the
    lock file it wrote, run at once under the shared lock and leave the cache as it was."""
    if shutil.which("terraform") is None:
        pytest.skip("no terraform binary on PATH")
    cache = tmp_path / "cache"
    settings = Settings(plugin_cache_dir=cache, provider_mirrors=(mirror,))
    terraform = Terraform(find_engine("terraform"), settings, tmp_path / "config")
    dirs = [tmp_path / name for name in ("first", "second", "third")]
    for directory in dirs:
        write_tree(directory, {"main.tf": USES_AWS})
    caplog.set_level(logging.DEBUG, logger="pytest_iac")

    terraform.run(["init"], cwd=dirs[0], quiet=True)
    assert f"locks the plugin cache alone: {AWS} is not pinned" in caplog.text
    version = tfconfig.locked_providers(dirs[0])[AWS]  # type: ignore[index]
    entry = cache / AWS / version / terraform.platform
    before = entry.lstat()
    caplog.clear()

    for directory in dirs[1:]:
        shutil.copy(dirs[0] / tfconfig.LOCK_FILE, directory)
    inits = [
        threading.Thread(target=terraform.run, args=(["init"],), kwargs={"cwd": d, "quiet": True})
        for d in dirs[1:]
    ]
    for init in inits:
        init.start()
    for init in inits:
        init.join()
    assert "locks the plugin cache alone" not in caplog.text
    for directory in dirs[1:]:
        linked = directory / ".terraform" / "providers" / AWS / version / terraform.platform
        assert linked.resolve() == entry.resolve()
    after = entry.lstat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

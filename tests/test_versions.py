"""Module sources read without Terraform: kinds, addresses, pins, version order (unit tier)."""

from __future__ import annotations

import pytest

from pytest_iac.versions import Pin, Version, parse_source

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("source", "version", "kind", "address", "status", "label"),
    [
        # git over https, ssh, scp-like and file, with sub-directories and query strings
        (
            "git::https://example.com/org/infrastructure-modules.git//vpc?ref=v0.3.1",
            None,
            "git",
            "example.com/org/infrastructure-modules//vpc",
            "pinned",
            "v0.3.1",
        ),
        (
            "git::ssh://git@example.com:2222/org/infrastructure-modules.git//vpc?ref=v0.3.1",
            None,
            "git",
            "example.com/org/infrastructure-modules//vpc",
            "pinned",
            "v0.3.1",
        ),
        (
            "git@github.com:org/repo.git//modules/db?ref=v2.0.0",
            None,
            "git",
            "github.com/org/repo//modules/db",
            "pinned",
            "v2.0.0",
        ),
        (
            "git::git@github.com:org/repo.git?ref=v2.0.0",
            None,
            "git",
            "github.com/org/repo",
            "pinned",
            "v2.0.0",
        ),
        (
            "git::file:///srv/modules//network/subnet?ref=v1.0.0",
            None,
            "git",
            "/srv/modules//network/subnet",
            "pinned",
            "v1.0.0",
        ),
        (
            "git::https://example.com/m.git//vpc?depth=1&ref=v1.2.3",
            None,
            "git",
            "example.com/m//vpc",
            "pinned",
            "v1.2.3",
        ),
        (
            "git::https://example.com/m.git//vpc/?ref=refs/tags/v1.2.3",
            None,
            "git",
            "example.com/m//vpc",
            "pinned",
            "v1.2.3",
        ),
        # GitHub and Bitbucket shorthands are git repositories, never registry addresses
        (
            "github.com/org/repo//x?ref=v1.0.0",
            None,
            "git",
            "github.com/org/repo//x",
            "pinned",
            "v1.0.0",
        ),
        (
            "github.com/org/repo/x?ref=v1.0.0",
            None,
            "git",
            "github.com/org/repo/x",
            "pinned",
            "v1.0.0",
        ),
        (
            "bitbucket.org/org/repo//x",
            None,
            "git",
            "bitbucket.org/org/repo//x",
            "mutable",
            "(none)",
        ),
        # commit SHAs, full and abbreviated
        (
            f"git::https://example.com/m.git//vpc?ref={SHA}",
            None,
            "git",
            "example.com/m//vpc",
            "pinned",
            SHA,
        ),
        (
            "git::https://example.com/m.git?ref=a1b2c3d",
            None,
            "git",
            "example.com/m",
            "pinned",
            "a1b2c3d",
        ),
        # per-module tags of a modules monorepo
        (
            "git::https://example.com/m.git//vpc?ref=vpc-v1.4.0",
            None,
            "git",
            "example.com/m//vpc",
            "pinned",
            "vpc-v1.4.0",
        ),
        (
            "git::https://example.com/m.git//vpc?ref=vpc/1.4.0",
            None,
            "git",
            "example.com/m//vpc",
            "pinned",
            "vpc/1.4.0",
        ),
        # what can move: no ref, a branch, a major or minor tag
        (
            "git::https://example.com/m.git//vpc",
            None,
            "git",
            "example.com/m//vpc",
            "mutable",
            "(none)",
        ),
        (
            "git::https://example.com/m.git//vpc?ref=main",
            None,
            "git",
            "example.com/m//vpc",
            "mutable",
            "main",
        ),
        (
            "git::https://example.com/m.git//vpc?ref=release-2024",
            None,
            "git",
            "example.com/m//vpc",
            "mutable",
            "release-2024",
        ),
        (
            "git::https://example.com/m.git//vpc?ref=v1",
            None,
            "git",
            "example.com/m//vpc",
            "mutable",
            "v1",
        ),
        (
            "git::https://example.com/m.git//vpc?ref=v1.2",
            None,
            "git",
            "example.com/m//vpc",
            "mutable",
            "v1.2",
        ),
        (
            "hg::https://example.com/m//vpc?rev=v1.0.0",
            None,
            "hg",
            "example.com/m//vpc",
            "pinned",
            "v1.0.0",
        ),
        # registry modules: the version argument decides
        ("hashicorp/consul/aws", "0.1.0", "registry", "hashicorp/consul/aws", "pinned", "0.1.0"),
        ("hashicorp/consul/aws", "= 0.1.0", "registry", "hashicorp/consul/aws", "pinned", "0.1.0"),
        ("hashicorp/consul/aws", None, "registry", "hashicorp/consul/aws", "mutable", "(none)"),
        ("hashicorp/consul/aws", "~> 0.1", "registry", "hashicorp/consul/aws", "mutable", "~> 0.1"),
        (
            "hashicorp/consul/aws",
            ">= 0.1.0, < 1.0.0",
            "registry",
            "hashicorp/consul/aws",
            "mutable",
            ">= 0.1.0, < 1.0.0",
        ),
        (
            "registry.terraform.io/Hashicorp/Consul/aws//modules/agent",
            "1.0.0-rc.1",
            "registry",
            "hashicorp/consul/aws//modules/agent",
            "pinned",
            "1.0.0-rc.1",
        ),
        (
            "app.terraform.io/example-corp/k8s-cluster/azurerm",
            "1.2.0",
            "registry",
            "app.terraform.io/example-corp/k8s-cluster/azurerm",
            "pinned",
            "1.2.0",
        ),
        # archives
        (
            "s3::https://s3-eu-west-1.amazonaws.com/corp-modules/vpc.zip",
            None,
            "s3",
            "s3-eu-west-1.amazonaws.com/corp-modules/vpc.zip",
            "mutable",
            "(none)",
        ),
        (
            "s3::https://s3-eu-west-1.amazonaws.com/corp-modules/vpc.zip?version=3HL4kqtJlcpXrof3vjVBH40Nrjfkd",
            None,
            "s3",
            "s3-eu-west-1.amazonaws.com/corp-modules/vpc.zip",
            "pinned",
            "3HL4kqtJlcpXrof3vjVBH40Nrjfkd",
        ),
        (
            "corp-modules.s3.amazonaws.com/vpc.zip",
            None,
            "s3",
            "corp-modules.s3.amazonaws.com/vpc.zip",
            "mutable",
            "(none)",
        ),
        (
            "gcs::https://www.googleapis.com/storage/v1/modules/vpc.zip",
            None,
            "gcs",
            "www.googleapis.com/storage/v1/modules/vpc.zip",
            "mutable",
            "(none)",
        ),
        (
            "https://example.com/vpc-module.zip?archive=zip",
            None,
            "http",
            "example.com/vpc-module.zip",
            "mutable",
            "(none)",
        ),
        # the caller's own code
        ("./modules/app", None, "local", "./modules/app", "local", "local"),
        ("../../modules/app", None, "local", "../../modules/app", "local", "local"),
    ],
)
def test_sources(
    source: str, version: str | None, kind: str, address: str, status: str, label: str
) -> None:
    parsed = parse_source(source, version)
    assert (parsed.kind, parsed.address, parsed.pin.status, parsed.pin.label) == (
        kind,
        address,
        status,
        label,
    )
    assert parsed.pin.reason  # every classification says why


def test_https_ssh_and_shorthand_of_one_repository_are_one_module() -> None:
    addresses = {
        parse_source(s).address
        for s in (
            "git::https://github.com/org/modules.git//vpc?ref=v1.0.0",
            "git::ssh://git@github.com/org/modules.git//vpc?ref=v1.1.0",
            "git@github.com:org/modules.git//vpc?ref=v1.2.0",
            "github.com/org/modules//vpc?ref=v1.3.0",
        )
    }
    assert addresses == {"github.com/org/modules//vpc"}


def test_the_ref_is_kept_apart_from_the_address() -> None:
    parsed = parse_source("git::https://example.com/m.git//vpc?ref=v1.2.3&depth=1")
    assert parsed.ref == "v1.2.3"
    assert "ref" not in parsed.address
    assert parse_source("hashicorp/consul/aws", "~> 1.0").ref == "~> 1.0"


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("v1.9.0", "v1.10.0"),
        ("v1.2.3", "v2.0.0"),
        ("1.2.0-rc.1", "1.2.0"),
        ("1.2.0-alpha", "1.2.0-alpha.1"),
        ("1.2.0-alpha.1", "1.2.0-alpha.beta"),
        ("1.2.0-beta.2", "1.2.0-beta.11"),
        ("1.2.0-beta.11", "1.2.0-rc.1"),
        ("v0.9.9", "1.0.0"),  # the v is not part of the version
        ("vpc-v1.9.0", "vpc-v1.10.0"),
    ],
)
def test_semantic_version_order(older: str, newer: str) -> None:
    a, b = _pin(older), _pin(newer)
    assert a.compare(b) == -1
    assert b.compare(a) == 1
    assert a.compare(a) == 0


def test_build_metadata_does_not_order() -> None:
    # `+` in a query string is a space to go-getter, as to any URL parser: written %2B
    first, second = _pin("v1.0.0%2Bbuild.1"), _pin("v1.0.0%2Bbuild.2")
    assert first.label == "v1.0.0+build.1"
    assert first.compare(second) == 0


def test_prefix_and_prerelease_are_told_apart() -> None:
    version = Version.parse("v1.2.0-1.2.3")
    assert version == Version(1, 2, 0, ("1", "2", "3"), "")
    assert Version.parse("my-mod-v1.2.0") == Version(1, 2, 0, (), "my-mod-")
    assert Version.parse("v1.2") is None
    assert Version.parse("main") is None


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        (SHA, "v1.0.0", "is a commit SHA"),
        ("a1b2c3d", "b2c3d4e", "is a commit SHA"),
        ("vpc-v1.0.0", "db-v2.0.0", "different series"),
        ("main", "v1.0.0", "not a semantic version"),
    ],
)
def test_what_cannot_be_ordered_is_never_guessed(first: str, second: str, why: str) -> None:
    a, b = _pin(first), _pin(second)
    assert a.compare(b) is None
    assert b.compare(a) is None
    assert why in a.why_unorderable(b)


def test_one_commit_abbreviated_or_not_is_the_same_version() -> None:
    assert _pin(SHA).compare(_pin(SHA[:7])) == 0


def _pin(ref: str) -> Pin:
    return parse_source(f"git::https://example.com/m.git?ref={ref}").pin

"""What init reads from a live directory, which decides which directories share one init.

Pure Python: the drift tests (tests/test_drift.py) show the sharing with real terraform.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iac import hcl
from pytest_iac.init_cache import init_inputs

TRICKY = r"""
# a comment with a brace {
terraform {
  backend "s3" {}   // and one } here
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
  }
}
/* a block comment } { */
resource "aws_s3_bucket" "b" {
  bucket = "a-${var.x == "}" ? "{" : "b"}-c"
  policy = <<-EOT
    { "Statement": "}" }
    EOT
  provider = aws.west
  tags = {
    a = "b"
  }
  lifecycle { ignore_changes = [tags] }
}
locals { literal = "$${not an interpolation" }
locals {
  résumé = 1
}
provider /* a comment in a header */ "aws" /* and another */ {
}
module "m" {
  source  = "../x"
  version = "1.0"
}
"""


def test_blocks_and_items_skip_strings_heredocs_and_comments() -> None:
    found = hcl.blocks(TRICKY)
    assert [(b.kind, b.labels) for b in found] == [
        ("terraform", ()),
        ("resource", ("aws_s3_bucket", "b")),
        ("locals", ()),
        ("locals", ()),
        ("provider", ("aws",)),
        ("module", ("m",)),
    ]
    terraform, resource, *_, module = found
    assert [(i.kind, i.labels) for i in hcl.items(terraform.body) if isinstance(i, hcl.Block)] == [
        ("backend", ("s3",)),
        ("required_providers", ()),
    ]
    attributes = {
        i.name: i.expression for i in hcl.items(resource.body) if isinstance(i, hcl.Attribute)
    }
    assert attributes["bucket"] == '"a-${var.x == "}" ? "{" : "b"}-c"'
    assert attributes["policy"].endswith('"}" }\n    EOT')
    assert attributes["provider"] == "aws.west"
    assert set(attributes) == {"bucket", "policy", "provider", "tags"}
    assert [i.name for i in hcl.items(module.body) if isinstance(i, hcl.Attribute)] == [
        "source",
        "version",
    ]


@pytest.mark.parametrize(
    "text",
    [
        'resource "a" "b" {\n  x = "open\n}\n',
        'resource "a" "b" {\n  x = <<EOT\nnever closed\n}\n',
        'resource "a" "b" {\n  x = [1, 2\n',
        'resource "a" "b" {\n  x = 1\n}}\n',
        'x = "attribute outside a block"\n',
        "/* never closed\n",
    ],
)
def test_what_cannot_be_read_is_an_error(text: str) -> None:
    with pytest.raises(hcl.HclError):
        hcl.blocks(text)


BASE = """\
terraform {
  backend "local" {}
}

variable "name" {
  default = "a"
}

resource "terraform_data" "r" {
  input = var.name
}

output "id" {
  value = terraform_data.r.id
}
"""


def read(tmp_path: Path, files: dict[str, str]) -> object:
    """init_inputs() of a fresh tree holding `files`."""
    tree = tmp_path / f"tree{len(list(tmp_path.iterdir()))}"
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    return init_inputs(tree)


def test_what_init_does_not_read_does_not_matter(tmp_path: Path) -> None:
    base = read(tmp_path, {"main.tf": BASE})
    assert base is not None
    other = (
        BASE.replace('"a"', '"b"').replace("input = var.name", "input = upper(var.name)")
        + 'resource "terraform_data" "more" {\n  count = 3\n}\n'
        + 'locals {\n  x = "${var.name}-x"\n}\n'
    )
    assert read(tmp_path, {"main.tf": other}) == base
    assert read(tmp_path, {"main.tf": BASE, "README.md": "notes", "x.tfvars": "a=1"}) == base


@pytest.mark.parametrize(
    "change",
    [
        ('backend "local" {}', 'backend "local" {\n    path = "other.tfstate"\n  }'),
        ("}\n\nvariable", '  required_version = ">= 1.5"\n}\n\nvariable'),
        ('terraform_data" "r"', 'aws_s3_bucket" "r"'),  # implies the aws provider
        ("input = var.name", "provider = terraform.other\n  input = var.name"),
        ("variable", 'provider "aws" {\n  region = "eu-west-1"\n}\n\nvariable'),
        ("variable", 'module "m" {\n  source = "./m"\n}\n\nvariable'),
        ("input = var.name", "input = provider::aws::arn_parse(var.name)"),
        ("variable", 'check "c" {\n  assert {\n    condition = true\n  }\n}\n\nvariable'),
    ],
    ids=[
        "backend",
        "required-version",
        "resource-of-another-provider",
        "provider-meta-argument",
        "provider-block",
        "module-call",
        "provider-function",
        "other-blocks",
    ],
)
def test_what_init_reads_makes_a_difference(tmp_path: Path, change: tuple[str, str]) -> None:
    old, new = change
    assert old in BASE
    changed = read(tmp_path, {"main.tf": BASE.replace(old, new, 1)})
    assert changed is not None
    assert changed != read(tmp_path, {"main.tf": BASE})


def test_module_versions_lock_files_backend_files_and_local_modules_matter(
    tmp_path: Path,
) -> None:
    calling = BASE + 'module "m" {\n  source = "./m"\n  name   = "x"\n}\n'
    base = read(tmp_path, {"main.tf": calling, "m/main.tf": 'resource "terraform_data" "x" {}\n'})
    assert base == read(
        tmp_path,
        {
            "main.tf": calling.replace('"x"', '"y"'),
            "m/main.tf": 'resource "terraform_data" "y" {}\n',
        },
    )
    assert base != read(
        tmp_path, {"main.tf": calling, "m/main.tf": 'resource "aws_instance" "x" {}\n'}
    )
    lock = {"main.tf": BASE, ".terraform.lock.hcl": 'provider "registry.terraform.io/a/b" {}\n'}
    assert read(tmp_path, lock) != read(tmp_path, {"main.tf": BASE})
    backend = {"main.tf": BASE, "prod.tfbackend": 'path = "x"\n'}
    assert read(tmp_path, backend) != read(tmp_path, {**backend, "prod.tfbackend": 'path = "y"\n'})


@pytest.mark.parametrize(
    "files",
    [
        {"main.tf": BASE.replace('backend "local" {}', 'backend "local" {\n    path = var.p\n  }')},
        {"main.tf": BASE + 'module "m" {\n  source = local.where\n}\n'},
        {"main.tf": BASE, "extra.tf.json": "{}"},
        {"main.tf": BASE, "main.tofu": ""},
        {"main.tf": BASE, "tests/a.tftest.hcl": 'run "a" {}\n'},
        {"main.tf": BASE + 'resource "x" "y" {\n  a = "unterminated\n}\n'},
    ],
    ids=["variable-in-backend", "local-in-module-source", "json", "tofu", "tests", "unreadable"],
)
def test_what_cannot_be_told_apart_is_not_shared(tmp_path: Path, files: dict[str, str]) -> None:
    assert read(tmp_path, files) is None

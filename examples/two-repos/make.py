"""Build this example's two repositories, offline: `python make.py DEST`.

DEST/infrastructure-modules
    A git repository of modules (blueprints). Each directory under ./modules is a release:
    the files that changed in it, committed on top of the release before and tagged with
    the directory's name (v1.0.0, v1.1.0, v2.0.0). The upgrade tests beside the modules
    (network/test_network.py, app/test_app.py) deploy an older tag and upgrade it.
DEST/infrastructure-live
    A git repository of live configuration (houses): environments dev, staging and prod call
    the modules through `git::file://` sources pinned to the tags in PINS, which Terraform
    fetches with no network. `pytest -m promotion` there shows which environment runs what.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import git

HERE = Path(__file__).resolve().parent
RELEASES = HERE / "modules"
ENVIRONMENTS = ("dev", "staging", "prod")  # the promotion order
# environment -> module -> tag: a newer version goes to dev first, then staging, then prod.
PINS: Mapping[str, Mapping[str, str]] = {
    "dev": {"network": "v1.1.0", "app": "v2.0.0"},
    "staging": {"network": "v1.1.0", "app": "v1.1.0"},
    "prod": {"network": "v1.0.0", "app": "v1.0.0"},
}
_AUTHOR = git.Actor("Example", "example@example.com")


def build(destination: Path, pins: Mapping[str, Mapping[str, str]] = PINS) -> tuple[Path, Path]:
    """Make both repositories under `destination`; return (modules, live)."""
    modules = destination / "infrastructure-modules"
    live = destination / "infrastructure-live"
    build_modules(modules)
    build_live(live, modules, pins)
    return modules, live


def build_modules(path: Path) -> None:
    repo = _init(path)
    with repo:
        _write(path / "pytest.ini", "[pytest]\n")
        for release in sorted((d for d in RELEASES.iterdir() if d.is_dir()), key=_version):
            shutil.copytree(release, path, dirs_exist_ok=True)
            _commit(repo, f"Release {release.name}")
            repo.create_tag(release.name, message=f"Release {release.name}")


def build_live(path: Path, modules: Path, pins: Mapping[str, Mapping[str, str]]) -> None:
    repo = _init(path)
    with repo:
        _write(path / "pytest.ini", f"[pytest]\niac_environments = {' '.join(ENVIRONMENTS)}\n")
        for environment, modules_used in pins.items():
            for module, ref in modules_used.items():
                write_live_root(path / environment / module, environment, module, modules, ref)
        _commit(repo, "Live configuration")


def write_live_root(
    directory: Path, environment: str, module: str, modules: Path, ref: str
) -> None:
    """One live root module: local state, and one call of `module` at `ref`."""
    source = f"git::file://{modules.resolve()}//{module}?ref={ref}" if ref else module
    _write(
        directory / "main.tf",
        f"""terraform {{
  backend "local" {{}}
}}

module "{module}" {{
  source = "{source}"
  name   = "{environment}-{module}"
}}
""",
    )


def _init(path: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:  # who tags: the example's author, not the user's
        config.set_value("user", "name", _AUTHOR.name)
        config.set_value("user", "email", _AUTHOR.email)
    return repo


def _commit(repo: git.Repo, message: str) -> None:
    repo.git.add(all=True)
    repo.index.commit(message, author=_AUTHOR, committer=_AUTHOR)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _version(release: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in release.name.lstrip("v").split("."))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DEST")
    made = build(Path(sys.argv[1]))
    print("\n".join(str(p) for p in made))

"""Module sources and their versions, read as Terraform reads them, without running it.

`parse_source(source, version)` takes a module call's `source` string (and its `version`
argument, for registry modules) and says what kind of source it is, its *address* (the
module's identity: the same module at any version has the same address, so a `git::https`
and a `git::ssh` URL of one repository agree) and its `pin`: the version it is fixed to, and
whether that version can change under the caller's feet.

The pin rule (see `Pin`):

- a registry module is pinned by an exact `version` (`1.2.3` or `= 1.2.3`); a constraint
  (`~> 1.2`, `>= 1.0, < 2.0`) or no `version` at all lets `init` pick a newer release;
- a git (or Mercurial) source is pinned by a `?ref=` that is a commit SHA (7 to 40 hex
  digits) or a release tag: a full semantic version `MAJOR.MINOR.PATCH`, with an optional
  `v` and an optional prefix ending in `-`, `/`, `_` or `@` (`vpc-v1.2.0`, `vpc/1.2.0`: the
  per-module tags of a modules monorepo). Anything else is taken for a branch or a moving
  tag (`main`, `develop`, `v1`, `v1.2`); no `?ref` means the default branch;
- an S3 archive is pinned by `?version=` (an S3 object version); other archives at a URL
  (HTTP, GCS) carry no version this can check, so they count as mutable;
- a local path (`./x`, `../x`) is the caller's own code: not versioned, and not a failure.

Versions order as semantic versions (`v1.10.0` after `v1.9.0`; `1.2.0-rc.1` before
`1.2.0`; build metadata ignored). Tags with different prefixes and commit SHAs cannot be
ordered, and `Pin.compare` says so (None) rather than guess. No pytest, no network here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

Kind = Literal["local", "registry", "git", "hg", "s3", "gcs", "http", "unknown"]
Status = Literal["pinned", "mutable", "local"]

DEFAULT_REGISTRY = "registry.terraform.io"
# go-getter's forced getters: `git::https://...`, `s3::https://...`
_FORCED = re.compile(r"^([A-Za-z0-9]+)::(.+)$", re.DOTALL)
# A registry label (namespace, name) and provider name, as Terraform's registry allows.
_LABEL = r"[0-9A-Za-z](?:[0-9A-Za-z_-]{0,62}[0-9A-Za-z])?"
_REGISTRY = re.compile(
    rf"^(?:(?P<host>[^/]+[.:][^/]*)/)?(?P<ns>{_LABEL})/(?P<name>{_LABEL})/(?P<provider>[0-9a-z]{{1,64}})$"
)
# Hosts Terraform never takes for a registry: their shorthands are git repositories.
_GIT_HOSTS = ("github.com", "bitbucket.org")
_SCP = re.compile(r"^(?:(?P<user>[\w.-]+)@)?(?P<host>[\w.-]+):(?P<path>[^/].*)$")
# Credentials Terraform takes in a source: `https://user:password@host`, `?sshkey=BASE64`.
_PASSWORD = re.compile(r"(://[^/?#@:]*):[^/?#@]*@")
_SSHKEY = re.compile(r"([?&]sshkey=)[^&#]*")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_SEMVER = re.compile(
    r"^(?P<prefix>(?:.*?[-/_@])??)v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
)
_PARTIAL = re.compile(r"^(?:.*[-/_@])?v?\d+(?:\.\d+)?$")  # v1, v1.2: moving major/minor tags
_EXACT = re.compile(r"^\s*=?\s*(?P<version>[^\s,<>=~!]+)\s*$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version, ordered as semver 2.0 orders them; `prefix` is a tag's leading part
    (`vpc-` of `vpc-v1.2.0`): versions with different prefixes are different series."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Version | None:
        """The version `text` names (`v1.2.3`, `1.2.3-rc.1`, `vpc-v1.2.3`), else None."""
        match = _SEMVER.match(text.strip())
        if match is None:
            return None
        pre = tuple(match["pre"].split(".")) if match["pre"] else ()
        return cls(
            int(match["major"]), int(match["minor"]), int(match["patch"]), pre, match["prefix"]
        )

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after its prereleases; numeric identifiers before alphanumeric ones.
        identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def same_precedence(self, other: Version) -> bool:
        return self._key() == other._key()


@dataclass(frozen=True)
class Pin:
    """What a module call is fixed to.

    `status` is "pinned" (an immutable version), "mutable" (what `init` fetches can change)
    or "local" (a path in the caller's tree). `label` is what a matrix shows (`v1.2.0`,
    `a1b2c3d`, `main`, `~> 1.2`, `(none)`, `local`); `reason` says why it counts as it does;
    `version` is set when the label is a semantic version, and `commit` when it is a SHA.
    """

    status: Status
    label: str
    reason: str
    version: Version | None = None
    commit: str | None = None

    def compare(self, other: Pin) -> int | None:
        """-1, 0 or 1 as this version is older, the same or newer; None when unorderable."""
        if self.label == other.label:
            return 0
        if self.commit and other.commit:
            short, long = sorted((self.commit, other.commit), key=len)
            return 0 if long.startswith(short) else None  # an abbreviated SHA of one commit
        a, b = self.version, other.version
        if a is None or b is None or a.prefix != b.prefix:
            return None
        if a.same_precedence(b):
            return 0
        return 1 if a > b else -1

    def why_unorderable(self, other: Pin) -> str:
        """Why `compare` gave None, in words."""
        for pin in (self, other):
            if pin.commit:
                return f"{pin.label} is a commit SHA: commits have no order without the repository"
            if pin.version is None:
                return f"{pin.label} is not a semantic version"
        return f"{self.label} and {other.label} are tags of different series"


@dataclass(frozen=True)
class ModuleSource:
    """A module call's source: its kind, its address (identity without the version) and pin."""

    raw: str
    kind: Kind
    address: str
    ref: str | None = None  # the `?ref=` (git, hg), `?version=` (S3) or registry `version`
    pin: Pin = Pin("mutable", "(none)", "")

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    @property
    def shown(self) -> str:
        """`raw` as reports show it: a password in the URL and an `sshkey=` masked."""
        return _SSHKEY.sub(r"\1<sensitive>", _PASSWORD.sub(r"\1:<sensitive>@", self.raw))


def parse_source(source: str, version: str | None = None) -> ModuleSource:
    """Read a module `source` (and a registry module's `version` argument)."""
    raw = source
    source = source.strip()
    if source.startswith(("./", "../", ".\\", "..\\")) or source in (".", ".."):
        return ModuleSource(raw, "local", source, pin=Pin("local", "local", _LOCAL))
    if source.startswith("/"):  # an absolute path: Terraform copies it, still local code
        return ModuleSource(raw, "local", source, pin=Pin("local", "local", _LOCAL))
    registry = _registry(raw, source, version)
    if registry is not None:
        return registry
    forced = None
    if match := _FORCED.match(source):
        forced, source = match[1].lower(), match[2]
    url, subdir = _split_subdir(source)
    url, query = _split_query(url)
    kind, location = _locate(forced, url)
    address = location + (f"//{subdir.strip('/')}" if subdir.strip("/") else "")
    if kind in ("git", "hg"):
        ref = query.get("ref" if kind == "git" else "rev")
        return ModuleSource(raw, kind, address, ref, _ref_pin(ref))
    if kind == "s3" and query.get("version"):
        ref = query["version"]
        pin = Pin("pinned", ref, "an S3 object version never changes")
        return ModuleSource(raw, kind, address, ref, pin)
    what = "an archive at a URL" if kind != "unknown" else "a source of a kind not known here"
    reason = f"{what}: nothing in the source says it cannot be replaced in place"
    return ModuleSource(raw, kind, address, None, Pin("mutable", "(none)", reason))


_LOCAL = "a local path: the caller's own code, versioned with it"


def _registry(raw: str, source: str, version: str | None) -> ModuleSource | None:
    if "::" in source or "://" in source:
        return None
    path, _, subdir = source.partition("//")
    match = _REGISTRY.match(path)
    if match is None:
        return None
    host = (match["host"] or DEFAULT_REGISTRY).lower()
    if host in _GIT_HOSTS:
        return None
    module = f"{match['ns']}/{match['name']}/{match['provider']}".lower()
    address = module if host == DEFAULT_REGISTRY else f"{host}/{module}"
    if subdir.strip("/"):
        address += f"//{subdir.strip('/')}"
    return ModuleSource(raw, "registry", address, version, _registry_pin(version))


def _registry_pin(version: str | None) -> Pin:
    if version is None or not version.strip():
        return Pin("mutable", "(none)", "no version: init takes the newest release there is")
    exact = _EXACT.match(version)
    parsed = Version.parse(exact["version"]) if exact else None
    if parsed is None or parsed.prefix:
        return Pin(
            "mutable",
            version.strip(),
            f"version {version.strip()!r} is a constraint, not one exact version: "
            "init takes the newest release it allows",
        )
    label = exact["version"] if exact else version
    return Pin("pinned", label, "an exact registry version", version=parsed)


def _ref_pin(ref: str | None) -> Pin:
    if not ref:
        return Pin("mutable", "(none)", "no ?ref=: the default branch, wherever it points then")
    name = ref.removeprefix("refs/tags/")
    if _SHA.match(name):
        return Pin("pinned", name, "a commit SHA", commit=name)
    version = Version.parse(name)
    if version is not None:
        return Pin("pinned", name, "a release tag (a semantic version)", version=version)
    if _PARTIAL.match(name):
        why = f"ref {name!r} names no patch release: a moving major or minor tag"
    else:
        why = (
            f"ref {name!r} is neither a release tag (MAJOR.MINOR.PATCH) nor a commit SHA: "
            "a branch, or a tag that may move"
        )
    return Pin("mutable", name, why)


def _split_subdir(source: str) -> tuple[str, str]:
    """`url//sub?q` -> (`url?q`, `sub`), as go-getter's SourceDirSubdir splits it."""
    stop = source.find("?")
    stop = len(source) if stop < 0 else stop
    scheme = source.find("://", 0, stop)
    offset = scheme + 3 if scheme >= 0 else 0
    at = source.find("//", offset, stop)
    if at < 0:
        return source, ""
    return source[:at] + source[stop:], source[at + 2 : stop]


def _split_query(url: str) -> tuple[str, dict[str, str]]:
    base, _, query = url.partition("?")
    return base, dict(parse_qsl(query, keep_blank_values=True))


def _locate(forced: str | None, url: str) -> tuple[Kind, str]:
    """The kind of a remote source and where it is, scheme, user, port and `.git` left out."""
    scp = _SCP.match(url) if "://" not in url else None
    if forced in ("git", "hg") or (forced is None and scp is not None):
        kind: Kind = "hg" if forced == "hg" else "git"
        if scp is not None:
            return kind, f"{scp['host'].lower()}/{_repo_path(scp['path'])}"
        return kind, _url_location(url)
    if forced == "s3" or (forced is None and ".amazonaws.com/" in url):
        return "s3", _url_location(url, keep_suffix=True)
    if forced == "gcs" or (forced is None and "googleapis.com/storage/" in url):
        return "gcs", _url_location(url, keep_suffix=True)
    if forced is None and url.lower().startswith(_GIT_HOSTS):
        return "git", _url_location("https://" + url)
    if forced in ("http", "https") or (forced is None and url.startswith(("http://", "https://"))):
        return "http", _url_location(url, keep_suffix=True)
    return "unknown", url


def _url_location(url: str, *, keep_suffix: bool = False) -> str:
    parts = urlsplit(url)
    path = parts.path if keep_suffix else _repo_path(parts.path)
    if parts.scheme == "file" or not parts.hostname:
        return path
    return f"{parts.hostname.lower()}/{path.lstrip('/')}"


def _repo_path(path: str) -> str:
    path = path.rstrip("/")
    return path.removesuffix(".git")

"""AWS for sandbox runs: the boto3 session, the account guard, the moto sandbox, tags, leaks.

One `AwsSandbox` per run (per xdist worker): it makes the boto3 session tests inspect with,
gives Terraform the same credentials and region (so both always see the same account),
refuses to deploy into an account that is not on the allowed list, merges the run's tags
into modules that take a `tags` variable, and after teardown sweeps for anything still
tagged with the run id. With `sandbox="moto"` all of it runs against a moto server on a
loopback port instead of AWS. No pytest import here; boto3 and moto are imported lazily.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iac import providers, tfconfig, versions
from pytest_iac.cleanup import COMMAND as CLEANUP
from pytest_iac.errors import IacError
from pytest_iac.sandbox import Event, Stack

if TYPE_CHECKING:
    from pytest_iac.ledger import Record

log = logging.getLogger("pytest_iac")

RUN_TAG = "pytest-iac:run"
TEST_TAG = "pytest-iac:test"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"
SANDBOX_KINDS = ("account", "moto")
MOTO_REGION = "us-east-1"
MOTO_CREDENTIALS = "testing"

# Variables that would take boto3 or Terraform somewhere else than the moto server.
_ELSEWHERE = re.compile(
    r"^AWS_(PROFILE|DEFAULT_PROFILE|ROLE_ARN|ROLE_SESSION_NAME|WEB_IDENTITY_TOKEN_FILE"
    r"|CONTAINER_CREDENTIALS_\w+|CONTAINER_AUTHORIZATION_TOKEN\w*|ENDPOINT_URL_\w+)$"
)
_ACCOUNT_ID = re.compile(r"^\d{12}$")


class AwsError(IacError):
    """The AWS side of the sandbox could not be set up or checked."""


class WrongAccountError(AwsError):
    """The run's credentials belong to an account it may not deploy into."""


@dataclass(frozen=True)
class AwsSettings:
    """What the plugin's `iac_aws_*` options and ini values say."""

    profile: str | None = None
    region: str | None = None
    role_arn: str | None = None
    allowed_accounts: tuple[str, ...] = ()
    sandbox: str = "account"  # "account": the one the settings point at; "moto": local
    fail_on_leak: bool = True

    def __post_init__(self) -> None:
        if self.sandbox not in SANDBOX_KINDS:
            raise AwsError(
                f"iac_aws_sandbox must be one of {', '.join(SANDBOX_KINDS)}, not {self.sandbox!r}"
            )
        bad = [a for a in self.allowed_accounts if not _ACCOUNT_ID.match(a)]
        if bad:
            raise AwsError(
                f"iac_aws_allowed_accounts must list 12-digit AWS account ids, not {bad}"
            )


@dataclass(frozen=True)
class Leak:
    """A resource still tagged with the run id after every deployment was destroyed."""

    arn: str
    tags: Mapping[str, str]

    def __str__(self) -> str:
        test = self.tags.get(TEST_TAG)
        return f"{self.arn} (tagged {RUN_TAG}={self.tags.get(RUN_TAG)}" + (
            f", {TEST_TAG}={test})" if test else ")"
        )


class MotoSandbox:
    """A moto server on a free loopback port, for one process: the local stand-in for AWS."""

    def __init__(self, region: str = MOTO_REGION) -> None:
        self.region = region
        self.endpoint: str | None = None
        self._server: Any = None
        self._werkzeug_level: int | None = None

    def start(self) -> str:
        if self.endpoint is not None:
            return self.endpoint
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise AwsError(
                "the moto sandbox (--iac-aws-sandbox=moto) needs moto's server: "
                "pip install 'pytest-iac[moto]'"
            ) from None
        # One line per request otherwise, in every captured log.
        werkzeug = logging.getLogger("werkzeug")
        self._werkzeug_level = werkzeug.level
        werkzeug.setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        log.info("pytest-iac: moto sandbox at %s", self.endpoint)
        return self.endpoint

    def environment(self) -> dict[str, str]:
        """What points boto3 and Terraform (provider and S3 backend) at the server."""
        if self.endpoint is None:
            return {}
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": MOTO_CREDENTIALS,
            "AWS_SECRET_ACCESS_KEY": MOTO_CREDENTIALS,
            "AWS_SESSION_TOKEN": MOTO_CREDENTIALS,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.endpoint = None
        if self._werkzeug_level is not None:
            logging.getLogger("werkzeug").setLevel(self._werkzeug_level)
            self._werkzeug_level = None


class AwsSandbox:
    """One run's AWS side. `hook` goes into the `Sandbox` hooks; `sweep()` after teardown."""

    def __init__(self, settings: AwsSettings, run_id: str, worker: str = "main") -> None:
        self.settings = settings
        self.run_id = run_id
        self.worker = worker
        self.moto = MotoSandbox(settings.region or MOTO_REGION) if self.is_moto else None
        self.used = False  # the account passed the guard: a stack or a test may make things
        self.started_at = datetime.datetime.now(datetime.UTC)
        self._session: Any = None
        # The credentials' account and ARN, or why sts could not tell: asked once.
        self._identity: tuple[str, str] | str | None = None
        self._saved_environ: dict[str, str | None] = {}

    @property
    def is_moto(self) -> bool:
        return self.settings.sandbox == "moto"

    # Setting up

    def start(self) -> None:
        """Start the moto server (once) and point this process's boto3 at it."""
        if self.moto is None or self.moto.endpoint is not None:
            return
        self.moto.start()
        for name in [k for k in os.environ if _ELSEWHERE.match(k)]:
            self._set_environ(name, None)
        for name, value in self.moto.environment().items():
            self._set_environ(name, value)

    def close(self) -> None:
        """Stop the moto server and give the process its environment back."""
        if self.moto is not None:
            self.moto.stop()
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ.clear()
        self._session = None

    def _set_environ(self, name: str, value: str | None) -> None:
        self._saved_environ.setdefault(name, os.environ.get(name))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    @property
    def session(self) -> Any:
        """The boto3 `Session` on the sandbox account (or the moto server)."""
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def _make_session(self) -> Any:
        import boto3
        import botocore.exceptions

        if self.moto is not None:
            self.start()
            return boto3.Session(
                aws_access_key_id=MOTO_CREDENTIALS,
                aws_secret_access_key=MOTO_CREDENTIALS,
                aws_session_token=MOTO_CREDENTIALS,
                region_name=self.moto.region,
            )
        try:
            base = boto3.Session(
                profile_name=self.settings.profile, region_name=self.settings.region
            )
        except botocore.exceptions.BotoCoreError as error:
            raise AwsError(
                f"iac_aws_profile {self.settings.profile!r}: {error}. Check the profile "
                "name in ~/.aws/config or change iac_aws_profile (ini) / --iac-aws-profile."
            ) from None
        if not self.settings.role_arn:
            return base
        return _assumed_role_session(base, self.settings.role_arn, self.session_name)

    @property
    def session_name(self) -> str:
        """The STS session name of an assumed role: names the run, seen in CloudTrail."""
        return re.sub(r"[^\w+=,.@-]", "-", f"pytest-iac-{self.run_id}-{self.worker}")[:64]

    def terraform_env(self, base: Mapping[str, str] | None = None) -> Mapping[str, str]:
        """`base` and the environment Terraform needs to see what `session` sees.

        Looked up again for each command, so assumed-role keys are always fresh.
        """
        return _TerraformEnv(self, dict(base or {}))

    def _terraform_values(self) -> dict[str, str]:
        if self.moto is not None:
            return self.moto.environment()
        values: dict[str, str] = {}
        if self.settings.region:
            values["AWS_REGION"] = values["AWS_DEFAULT_REGION"] = self.settings.region
        if self.settings.role_arn:
            credentials = self.session.get_credentials().get_frozen_credentials()
            values.update(
                AWS_ACCESS_KEY_ID=credentials.access_key,
                AWS_SECRET_ACCESS_KEY=credentials.secret_key,
                AWS_SESSION_TOKEN=credentials.token or "",
                AWS_PROFILE="",
            )
        elif self.settings.profile:
            # Empty is unset for the AWS SDKs: the profile, not stray keys, decides.
            values.update(
                AWS_PROFILE=self.settings.profile,
                AWS_ACCESS_KEY_ID="",
                AWS_SECRET_ACCESS_KEY="",
                AWS_SESSION_TOKEN="",
            )
        return values

    # The guard

    def check_account(self, destroying: str | None = None) -> str:
        """The account the run works in, if it may; else raise `AwsError` (`WrongAccountError`
        for an account it may not use).

        `destroying`: for `--iac-cleanup`, the account the deployment to destroy was recorded
        in ("" if unknown); a refusal then says it refuses to destroy, and how to finish.
        """
        if self._identity is None:
            self._identity = self._caller_identity()
        if isinstance(self._identity, str):
            raise AwsError(_unknown_account(self._identity, destroying))
        account, arn = self._identity
        if not self.is_moto:  # the local server: nothing real to protect
            allowed = self.settings.allowed_accounts
            if destroying and destroying != account:
                raise WrongAccountError(
                    f"pytest-iac refuses to destroy it: it was recorded in AWS account "
                    f"{destroying}, but this clean-up's credentials belong to account "
                    f"{account}. Nothing was destroyed. Switch the credentials to account "
                    f"{destroying} and run `{CLEANUP}` again"
                )
            if not allowed or account not in allowed:
                where = (
                    f"account {account} ({arn}"
                    + (
                        f", through the endpoint {os.environ['AWS_ENDPOINT_URL']}"
                        if _endpoint()
                        else ""
                    )
                    + ")"
                )
                raise WrongAccountError(_not_allowed(where, account, allowed, destroying))
        self.used = True  # from here on, something may be made there: sweep after the run
        return account

    def _caller_identity(self) -> tuple[str, str] | str:
        """The account and ARN of the run's credentials, or why they could not be told."""
        import botocore.exceptions

        try:
            identity = self.session.client("sts").get_caller_identity()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            return str(error)
        return str(identity["Account"]), str(identity.get("Arn"))

    def hook(self, event: Event, stack: Stack) -> None:
        """The `Sandbox` hook: guard every plan, apply and destroy of an AWS stack; tag it."""
        if event not in ("before-plan", "before-apply", "before-destroy") or not uses_aws(stack):
            return
        self.start()
        account = self.check_account()
        if event == "before-apply":  # the ledger record says where it went, for --iac-cleanup
            stack.notes.update(aws="moto" if self.is_moto else "account", aws_account=account)
        if event == "before-apply" and declares_tags(stack.module_dir):
            given = stack.vars.get("tags") or {}
            if not isinstance(given, Mapping):
                raise AwsError(
                    f"vars['tags'] for {stack.source} must be a map of strings to merge the "
                    f"run's tags into, not {type(given).__name__}"
                )
            stack.vars["tags"] = {**given, **self.tags(stack.workdir.name)}

    def cleanup_guard(self, record: Record) -> str | None:
        """`--iac-cleanup`'s guard: the one a deployment passed is asked again before its
        destroy; a moto deployment needs none (its resources ended with the server)."""
        where = record.notes.get("aws")
        if where is None and _initialised_with_aws(
            Path(record.module_dir), Path(record.tf_data_dir)
        ):
            where = "account"  # says nothing, but uses AWS: guard it like the run did
        if where == "moto":
            return "it was deployed into a moto sandbox, whose resources ended with its server"
        if where is None:
            return None
        recorded = record.notes.get("aws_account", "")
        if self.is_moto:
            raise AwsError(
                f"pytest-iac refuses to destroy it: it was deployed into "
                f"{f'AWS account {recorded}' if recorded else 'an AWS account'}, but this "
                "clean-up's AWS sandbox is moto, where destroying it would remove nothing real. "
                f"Nothing was destroyed. Run `{CLEANUP} --iac-aws-sandbox=account` with that "
                "account's credentials"
            )
        self.check_account(destroying=recorded)
        return None

    def tags(self, test: str) -> dict[str, str]:
        """The tags of a deployment: the run id (what the sweep looks for) and its test."""
        return {RUN_TAG: self.run_id, TEST_TAG: test}

    # The sweep

    def sweep(self, kept: Sequence[str] = ()) -> list[Leak]:
        """Everything still tagged with the run id, except the deployments named in `kept`.

        Asks the Resource Groups Tagging API, then S3 directly (the tagging API is slow to
        see buckets), for the buckets made since the run started.
        """
        import botocore.exceptions

        found: dict[str, dict[str, str]] = {}
        session = self.session
        try:
            tagging = session.client("resourcegroupstaggingapi")
            pages = tagging.get_paginator("get_resources").paginate(
                TagFilters=[{"Key": RUN_TAG, "Values": [self.run_id]}]
            )
            for page in pages:
                for mapping in page.get("ResourceTagMappingList", []):
                    tags = {t["Key"]: t["Value"] for t in mapping.get("Tags", [])}
                    found[mapping["ResourceARN"]] = tags
            s3 = session.client("s3")
            since = self.started_at - datetime.timedelta(minutes=5)
            for bucket in s3.list_buckets().get("Buckets", []):
                if bucket["CreationDate"] < since:
                    continue
                tags = _bucket_tags(s3, bucket["Name"])
                if tags.get(RUN_TAG) == self.run_id:
                    found[f"arn:aws:s3:::{bucket['Name']}"] = tags
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            return [Leak(f"(the sweep for leaks could not finish: {error})", {})]
        return [
            Leak(arn, tags)
            for arn, tags in sorted(found.items())
            if tags.get(TEST_TAG) not in kept and not _scheduled_for_deletion(session, arn)
        ]


class _TerraformEnv(Mapping[str, str]):
    """`AwsSandbox._terraform_values()`, looked up again for every command (fresh keys)."""

    def __init__(self, aws: AwsSandbox, base: dict[str, str]) -> None:
        self._aws = aws
        self._base = base
        self._values: dict[str, str] = {}
        self._read_at = -1.0

    def _current(self) -> dict[str, str]:
        if time.monotonic() - self._read_at > 60:
            self._values = {**self._base, **self._aws._terraform_values()}
            self._read_at = time.monotonic()
        return self._values

    def __getitem__(self, key: str) -> str:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        self._read_at = -1.0  # a new command: read the credentials again
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


def _assumed_role_session(base: Any, role_arn: str, session_name: str) -> Any:
    """A boto3 session on `role_arn`, assumed from `base`; refreshed before it expires."""
    import boto3
    import botocore.exceptions
    import botocore.session
    from botocore.credentials import RefreshableCredentials

    sts = base.client("sts")

    def assume() -> dict[str, str]:
        try:
            response = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise AwsError(
                f"could not assume iac_aws_role_arn {role_arn}: {error}. Check the role's "
                "trust policy and the credentials it is assumed with (iac_aws_profile or the "
                "AWS_* environment)."
            ) from None
        credentials = response["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=assume(), refresh_using=assume, method="sts-assume-role"
    )
    core = botocore.session.Session()
    core._credentials = refreshable  # botocore has no public setter for refreshable ones
    return boto3.Session(botocore_session=core, region_name=base.region_name)


def _bucket_tags(s3: Any, bucket: str) -> dict[str, str]:
    import botocore.exceptions

    try:
        tag_set = s3.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except botocore.exceptions.ClientError:
        return {}  # no tags, or a bucket of another region or owner: not ours
    return {t["Key"]: t["Value"] for t in tag_set}


def _scheduled_for_deletion(session: Any, arn: str) -> bool:
    """Whether a destroy left `arn` waiting out a deletion window (still tagged, yet gone).

    A KMS key is deleted 7-30 days after its destroy, a Secrets Manager secret after its
    recovery window; both keep their tags meanwhile, and neither is a leak.
    """
    import botocore.exceptions

    service, region = [*arn.split(":"), "", "", "", ""][2:4]
    try:
        if service == "kms":
            kms = session.client("kms", region_name=region or None)
            state = kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]
            return state in ("PendingDeletion", "PendingReplicaDeletion")
        if service == "secretsmanager":
            secrets = session.client("secretsmanager", region_name=region or None)
            return "DeletedDate" in secrets.describe_secret(SecretId=arn)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False  # cannot tell: reported, as a leak should be
    return False


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or None


def uses_aws(stack: Stack) -> bool:
    """Whether the stack was initialised with the hashicorp/aws provider (child modules too)."""
    return _initialised_with_aws(stack.module_dir, stack.data_dir)


def _initialised_with_aws(module_dir: Path, data_dir: Path) -> bool:
    lock = module_dir / ".terraform.lock.hcl"
    if lock.is_file() and f'"{AWS_PROVIDER}"' in lock.read_text(encoding="utf-8"):
        return True
    return (data_dir / "providers" / AWS_PROVIDER).is_dir()


def module_uses_aws(directory: Path) -> bool:
    """Whether the module in `directory` (or a local module it calls) uses the AWS provider,
    or calls a registry module made for it (`terraform-aws-modules/vpc/aws`).

    A file the reader cannot read counts as using it: the AWS guards then apply.
    """
    for module in tfconfig.read_closure(directory).values():
        if not module.readable or AWS_PROVIDER in module.providers.values():
            return True
        if any(_registry_provider(call) == "aws" for call in module.module_calls.values()):
            return True
    return False


def _registry_provider(call: tfconfig.ModuleCall) -> str | None:
    """The provider a registry module is made for: the last part of NAMESPACE/NAME/PROVIDER."""
    if call.source is None:
        return None
    source = versions.parse_source(call.source, call.version)
    return source.address.split("//")[0].split("/")[-1] if source.kind == "registry" else None


def declares_tags(module_dir: Path) -> bool:
    """Whether the module takes a `tags` variable: the run's tags are merged into it.

    A file the reader cannot read counts as declaring it: resources left untagged could not
    be found by the leak sweep, while a value for an undeclared variable is only a warning.
    """
    module = tfconfig.read_module(module_dir)
    return "tags" in module.variables or not module.readable


def provider_unavailable(mirrors: Sequence[Path], timeout: float = 3.0) -> str | None:
    """Why hashicorp/aws cannot be installed (no mirror holds it, no registry), or None."""
    if providers.mirrored(AWS_PROVIDER, mirrors):
        return None
    why = providers.unreachable(providers.DEFAULT_REGISTRY, timeout)
    if why is None:
        return None
    return providers.explain("hashicorp/aws", mirrors, providers.DEFAULT_REGISTRY, why)


def _unknown_account(error: str, destroying: str | None) -> str:
    """Why the guard cannot tell the account (sts failed), for a deploy or a clean-up."""
    failed = f"(sts:GetCallerIdentity failed: {error})"
    if destroying is None:
        return (
            f"could not tell which AWS account this run would deploy into {failed}. Nothing "
            "was deployed. Give the run credentials for the sandbox account (iac_aws_profile, "
            "iac_aws_role_arn or the AWS_* environment), or use --iac-aws-sandbox=moto for a "
            "local sandbox."
        )
    account = f"account {destroying}" if destroying else "the account it was deployed into"
    return (
        "pytest-iac refuses to destroy it: it cannot tell which AWS account this clean-up's "
        f"credentials belong to {failed}. Nothing was destroyed. Give the clean-up credentials "
        f"for {account} (iac_aws_profile, iac_aws_role_arn or the AWS_* environment) and run "
        f"`{CLEANUP}` again"
    )


def _not_allowed(where: str, account: str, allowed: Sequence[str], destroying: str | None) -> str:
    """Why the account guard refuses `account`, for a deploy or (`destroying`) a clean-up."""
    if destroying is None:
        verb, subject, nothing = "deploy", "the run's", "Nothing was deployed."
    else:
        verb, subject, nothing = "destroy it", "this clean-up's", "Nothing was destroyed."
    again = "" if destroying is None else f", then run `{CLEANUP}` again"
    if not allowed:
        return (
            f"pytest-iac refuses to {verb}: {subject} AWS credentials belong to {where} "
            "and no sandbox accounts are configured, so it cannot tell a sandbox from "
            f"production. {nothing} If this is a sandbox account, allow it: "
            f"iac_aws_allowed_accounts = {account} (ini) or "
            f"--iac-aws-allowed-accounts={account}{again}; or run against a local sandbox with "
            "--iac-aws-sandbox=moto."
        )
    return (
        f"pytest-iac refuses to {verb}: {subject} AWS credentials belong to {where}, "
        f"which is not in iac_aws_allowed_accounts ({', '.join(allowed)}). {nothing} Point "
        f"{'the run' if destroying is None else 'the clean-up'} at a sandbox account "
        "(iac_aws_profile / iac_aws_role_arn / the AWS_* environment), or, if this account "
        "is a sandbox, add it to iac_aws_allowed_accounts (ini) or "
        f"--iac-aws-allowed-accounts{again}."
    )

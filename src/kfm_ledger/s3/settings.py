"""Where the S3 endpoint is and who we are: ``[s3]`` settings, the ``AWS_*`` environment, ``~/.aws`` files.

Each value is taken from the first place that has it:

1. the ``[s3]`` section of the configuration file (``--config FILE`` / ``KFM_CONFIG``;
   :class:`kfm_ledger.config.S3Settings`: ``endpoint_url``, ``region``, ``allow_http``),
2. the standard environment: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
   ``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
   / ``AWS_SESSION_TOKEN``,
3. the AWS shared files of the profile ``AWS_PROFILE`` (else ``default``):
   ``~/.aws/credentials`` (``AWS_SHARED_CREDENTIALS_FILE``) for the keys and ``~/.aws/config``
   (``AWS_CONFIG_FILE``) for ``region`` and ``endpoint_url``,
4. defaults: AWS's own endpoint, region ``us-east-1``, https only, and, without keys,
   the client's other credential sources (web identity, container, instance metadata).

Credentials are never taken from the configuration file (it may be committed) and never
printed: :class:`S3Connection`'s ``repr`` hides them.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kfm_ledger.config import S3Settings
from kfm_ledger.errors import S3LocationError

__all__ = ["DEFAULT_REGION", "S3Connection", "resolve_connection"]

#: The region used when none is configured anywhere (what AWS's own tools assume for S3).
DEFAULT_REGION = "us-east-1"
#: AWS shared files larger than this are ignored (they are a few hundred bytes).
_MAX_AWS_FILE_BYTES = 1 << 20

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class S3Connection:
    """Everything needed to talk to one S3 endpoint (credentials hidden from ``repr``)."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    allow_http: bool = False
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """A short text for messages: the endpoint (or AWS) and the region, never a secret."""
        return f"{self.endpoint_url or 'AWS S3'} (region {self.region})"


def resolve_connection(
    settings: S3Settings | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
) -> S3Connection:
    """The connection settings for S3, from ``settings``, then ``environ``, then the AWS shared files.

    A plain ``http://`` endpoint without ``allow_http`` (or ``AWS_ALLOW_HTTP=true``), an
    endpoint that is not an http(s) URL, or an ``AWS_ALLOW_HTTP`` that is not a boolean is
    refused with :class:`~kfm_ledger.errors.S3LocationError` naming the setting.
    """
    env = os.environ if environ is None else environ
    settings = settings or S3Settings()
    profile = env.get("AWS_PROFILE") or "default"
    base = home if home is not None else Path(os.path.expanduser("~"))
    cfg = _profile_section(Path(env.get("AWS_CONFIG_FILE") or base / ".aws" / "config"), profile, config=True)
    creds = _profile_section(
        Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or base / ".aws" / "credentials"), profile, config=False
    )
    endpoint = (
        settings.endpoint_url
        or env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or cfg.get("endpoint_url")
        or None
    )
    region = settings.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or cfg.get("region")
    allow_http = settings.allow_http if settings.allow_http is not None else _env_bool(env, "AWS_ALLOW_HTTP")
    _check_endpoint(endpoint, allow_http)
    key_id = env.get("AWS_ACCESS_KEY_ID")
    secret = env.get("AWS_SECRET_ACCESS_KEY")
    token = env.get("AWS_SESSION_TOKEN")
    if not key_id or not secret:  # the environment's pair, else the profile's pair, never a mix
        key_id = creds.get("aws_access_key_id")
        secret = creds.get("aws_secret_access_key")
        token = creds.get("aws_session_token")
    return S3Connection(
        endpoint_url=endpoint.rstrip("/") if endpoint else None,
        region=region or DEFAULT_REGION,
        allow_http=allow_http,
        access_key_id=key_id or None,
        secret_access_key=secret or None,
        session_token=token or None,
    )


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name)
    if value is None:
        return False
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise S3LocationError(f"{name} must be true or false, found {value!r}", location=name, field="allow_http")


def _check_endpoint(endpoint: str | None, allow_http: bool) -> None:
    if endpoint is None:
        return
    low = endpoint.lower()
    if not low.startswith(("http://", "https://")):
        raise S3LocationError(
            f"the S3 endpoint must be an http(s) URL, found {endpoint!r}", location=endpoint, field="endpoint_url"
        )
    if low.startswith("http://") and not allow_http:
        raise S3LocationError(
            f"the S3 endpoint {endpoint} is plain http: set AWS_ALLOW_HTTP=true (or allow_http = true in [s3]) "
            "to allow it, or use https",
            location=endpoint,
            field="allow_http",
        )


def _profile_section(path: Path, profile: str, *, config: bool) -> dict[str, str]:
    """The ``profile``'s keys in an AWS shared file (``{}`` when it is absent or unreadable)."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_AWS_FILE_BYTES:
            return {}
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        return {}
    section = profile if not config or profile == "default" else f"profile {profile}"
    if not parser.has_section(section):
        return {}
    return {k: v.strip() for k, v in parser.items(section)}

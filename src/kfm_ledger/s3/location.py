"""``s3://bucket/prefix`` locations: parsing and checking, no I/O.

A location names a bucket and an optional key prefix inside it (a "folder": the ledger's
objects live at ``<prefix>/checkpoint``, ``<prefix>/tile/...``).  Bucket names follow the
S3 rules (3-63 characters of lowercase letters, digits, ``.`` and ``-``, starting and
ending with a letter or digit, not an IP address); a prefix is ``/``-separated segments,
none empty, ``.`` or ``..``, no backslash or control character, and at most 512 bytes,
so that every key the ledger derives from it stays well under S3's 1,024-byte limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfm_ledger.errors import S3LocationError

__all__ = ["S3_SCHEME", "S3Location", "is_s3_url", "parse_s3_url"]

#: The URL scheme of an S3 location.
S3_SCHEME = "s3://"
#: The longest prefix accepted (bytes of UTF-8).
MAX_PREFIX_BYTES = 512

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_BAD_CHARS_RE = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (``""`` for the bucket's top), as in ``s3://bucket/prefix``."""

    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        """The full object key of ``name`` (a ``/``-separated key relative to the prefix)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def relative(self, full_key: str) -> str | None:
        """``full_key`` relative to the prefix, or None when it lies outside it."""
        if not self.prefix:
            return full_key
        head = self.prefix + "/"
        return full_key[len(head) :] if full_key.startswith(head) else None

    def child(self, name: str) -> S3Location:
        """The location of the folder ``name`` under this one."""
        return S3Location(self.bucket, self.key(name.strip("/")))

    def url(self) -> str:
        """The location as an ``s3://`` URL (what :func:`parse_s3_url` reads back)."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"

    def __str__(self) -> str:
        return self.url()


def is_s3_url(text: object) -> bool:
    """Whether ``text`` is meant as an S3 location (starts with ``s3://``, any case)."""
    return isinstance(text, str) and text[:5].lower() == S3_SCHEME


def parse_s3_url(text: str) -> S3Location:
    """Parse ``s3://bucket[/prefix[/]]`` into an :class:`S3Location`.

    A trailing ``/`` is allowed and dropped.  Query strings, fragments, credentials in the
    URL and malformed names are refused with :class:`~kfm_ledger.errors.S3LocationError`
    naming the part that is wrong.
    """
    if not is_s3_url(text):
        raise S3LocationError(f"not an S3 location (expected s3://bucket/prefix): {text!r}", location=text)
    rest = text[len(S3_SCHEME) :]
    for ch, what in (("?", "a query string"), ("#", "a fragment"), ("@", "credentials")):
        if ch in rest:
            raise S3LocationError(
                f"{text!r}: an S3 location has no {what} ({ch!r}); give credentials in the AWS_* environment",
                location=text,
                field="url",
            )
    bucket, _, prefix = rest.partition("/")
    _check_bucket(bucket, text)
    prefix = prefix[:-1] if prefix.endswith("/") else prefix
    _check_prefix(prefix, text)
    return S3Location(bucket, prefix)


def _check_bucket(bucket: str, text: str) -> None:
    if not bucket:
        raise S3LocationError(f"{text!r}: no bucket name (expected s3://bucket/prefix)", location=text, field="bucket")
    if not _BUCKET_RE.match(bucket) or ".." in bucket or _IP_RE.match(bucket):
        raise S3LocationError(
            f"{text!r}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit)",
            location=text,
            field="bucket",
        )


def _check_prefix(prefix: str, text: str) -> None:
    if not prefix:
        return
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX_BYTES:
        raise S3LocationError(
            f"{text!r}: the prefix is longer than {MAX_PREFIX_BYTES} bytes", location=text, field="prefix"
        )
    bad = _BAD_CHARS_RE.search(prefix)
    if bad:
        raise S3LocationError(
            f"{text!r}: the prefix holds a forbidden character {bad.group()!r}", location=text, field="prefix"
        )
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise S3LocationError(f"{text!r}: the prefix is not valid Unicode", location=text, field="prefix") from None
    for segment in prefix.split("/"):
        if segment in ("", ".", ".."):
            raise S3LocationError(
                f"{text!r}: the prefix has an empty, '.' or '..' segment ({prefix!r})", location=text, field="prefix"
            )

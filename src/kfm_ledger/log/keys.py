"""The log's keys: reading key files, the default signing key, writing a key pair.

Key files hold one line in Go's sumdb/note text formats (c2sp.org/signed-note:
``PRIVATE+KEY+<name>+<hash>+<key>`` and the verifier key ``<name>+<hash>+<key>``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import KeyFormatError, NotALedgerError, ObjectNotFoundError
from kfm_ledger.inputs import MAX_KEY_FILE_BYTES
from kfm_ledger.storage import local_path_of, read_private_of
from kfm_ledger.storage.local import check_private_mode, read_regular_file

from .layout import SKEY_KEY

if TYPE_CHECKING:
    from kfm_ledger.storage import Storage


def read_text_key(data: bytes, what: str, *, kind: str | None = None) -> str:
    """The single key line of a key file (Go's sumdb/note text format).

    ``what`` names the file in messages; ``kind`` ("signer key" or "verifier key") is
    the ``what`` of the :class:`~kfm_ledger.errors.KeyFormatError` raised.  The key
    text is never put in the error (it may be private).
    """
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyFormatError(f"{what}: not UTF-8 text", what=kind) from None
    if not text or "\n" in text:
        raise KeyFormatError(f"{what}: expected exactly one key line", what=kind)
    return text


def load_signer(data: bytes, what: str = SKEY_KEY) -> Signer:
    """A Signer from a key file's bytes (Go's ``PRIVATE+KEY+...`` text)."""
    return Signer.from_private_key_text(read_text_key(data, what, kind="signer key"))


def load_signer_file(path: str | os.PathLike[str]) -> Signer:
    """A Signer from a key file on disk (``--key FILE``, ``$KFM_KEY``).

    Like ssh: the path may be a symbolic link (the user named it), but what it reaches
    must be a regular file that neither group nor others may access (``chmod 600``), else
    :class:`~kfm_ledger.errors.StorageError` naming the path and the fix.  (The ledger's own
    ``log.key`` is read through the storage, which follows no link inside the ledger.)
    """
    data, st = read_regular_file(path, follow=True, limit=MAX_KEY_FILE_BYTES)
    check_private_mode(st, os.fspath(path))
    return load_signer(data, os.fspath(path))


def default_signer(storage: Storage, key_file: str | os.PathLike[str] | None = None) -> Signer:
    """The signing key to use: ``key_file`` when given, else the ledger's own ``log.key``.

    (The CLI passes ``--key`` or ``$KFM_KEY`` as ``key_file``.)
    :class:`~kfm_ledger.errors.NotALedgerError` when there is none.
    """
    if key_file is not None:
        return load_signer_file(key_file)
    try:
        return load_signer(read_private_of(storage, SKEY_KEY))
    except ObjectNotFoundError:
        raise NotALedgerError(
            f"no signing key: {SKEY_KEY} is not in the ledger; pass --key FILE or set KFM_KEY",
            path=local_path_of(storage, SKEY_KEY),
        ) from None


#: A key file is always a new file, never written through a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def write_private_key_file(path: str | os.PathLike[str], text: str) -> None:
    """Create a private key file, mode 0600; refuses (FileExistsError) to overwrite one."""
    fd = os.open(path, _NEW_FILE, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_key_pair(
    key_file: str | os.PathLike[str], vkey_file: str | os.PathLike[str], private_key_text: str, vkey_text: str
) -> None:
    """Write a private key (mode 0600) and its verifier key (0644); neither may exist.

    The private key is removed again if its verifier key cannot be written: a
    half-written pair (new private key, old verifier key) would not match.
    """
    write_private_key_file(key_file, private_key_text + "\n")
    try:
        with os.fdopen(os.open(vkey_file, _NEW_FILE, 0o644), "w") as f:
            f.write(vkey_text + "\n")
    except OSError:
        os.unlink(key_file)  # no private key without its verifier key
        raise

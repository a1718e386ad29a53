"""Error messages never echo key material.

Text that holds a private key (``PRIVATE+KEY+<name>+<id>+<base64 seed>``) may reach a
parser when a key file is passed where a tlog-proof, checkpoint, note or verifier key
belongs.  Every message and ``found`` evidence value that would quote such text shows
:data:`HIDDEN_KEY_TEXT` instead: even a cut piece of the line (the usual 60 characters)
holds base64 characters of the seed.

Pure: no I/O.
"""

from __future__ import annotations

__all__ = ["HIDDEN_KEY_TEXT", "holds_private_key"]

#: What an error message shows instead of text that holds a private key.
HIDDEN_KEY_TEXT = "<private key text, not shown>"


def holds_private_key(text: str | bytes) -> bool:
    """Whether ``text`` holds a private key's text (``PRIVATE+KEY``, any case, anywhere)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", errors="replace")
    return "PRIVATE+KEY" in text.upper()

"""HTTP(S) reads for the resolver: one GET per attempt, a timeout, transient errors retried.

Transient (retried by the resolver): connection errors, timeouts, HTTP 408, 429 and 5xx.
Final: every other HTTP status (404: "not found"), a URL urllib refuses.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

from ..errors import ResolveError
from .resolver import Transient

__all__ = ["http_chunks"]

_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def http_chunks(uri: str, url: str, timeout: float) -> Iterator[bytes]:
    """The body at ``url`` in chunks (a generator: the request is sent on the first ``next``)."""
    request = urllib.request.Request(url, headers={"User-Agent": "kfm-ledger"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code in _RETRY_STATUS:
            raise Transient(f"HTTP {e.code} from {url}") from None
        what = "not found" if e.code == 404 else "refused"
        raise ResolveError(uri, f"{what} (HTTP {e.code})", location=url) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise Transient(f"cannot reach {url}: {reason}") from None
    except ValueError as e:
        raise ResolveError(uri, f"not a usable URL: {e}", location=url) from None
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except OSError as e:
                raise Transient(f"reading {url} failed: {e}") from None
            if not chunk:
                return
            yield chunk

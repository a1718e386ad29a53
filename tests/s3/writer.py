"""A writer process for the concurrency tests: appends batches to an S3 ledger, printing each acknowledged one.

``python writer.py URL KEYFILE ROWS_FILE FIRST COUNT BATCH``: rows FIRST .. FIRST+COUNT-1 of
ROWS_FILE (one row a line), BATCH rows an append, on one opened ledger.  After each append
returns it prints ``ACK <first row> <n>`` (flushed); a refused append prints ``FAIL <first row>
<error type>``.  Connection settings come from the ``AWS_*`` environment.
"""

from __future__ import annotations

import sys

from kfm_ledger.errors import KfmError
from kfm_ledger.log.keys import load_signer_file
from kfm_ledger.log.remote import RemoteLedger
from kfm_ledger.storage.s3 import S3Storage


def main(url: str, key: str, rows_file: str, first: int, count: int, size: int) -> None:
    lines = open(rows_file, "rb").read().splitlines()
    signer = load_signer_file(key)
    led = RemoteLedger.open(S3Storage.from_url(url))
    for start in range(first, first + count, size):
        stop = min(start + size, first + count)
        try:
            led.append(b"".join(line + b"\n" for line in lines[start:stop]), signer=signer, wait=120)
        except KfmError as exc:
            print(f"FAIL {start} {type(exc).__name__} {exc}", flush=True)
            continue
        print(f"ACK {start} {stop - start}", flush=True)
    led.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:7]))

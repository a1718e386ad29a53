"""A c2sp.org/tlog-witness witness, and the log side of witnessing.

Witness side (``kfm witness init`` / ``kfm witness serve``):

* :mod:`.protocol`: the ``add-checkpoint`` wire formats (pure);
* :mod:`.check`: the spec's checks, in order, deciding each status code (pure);
* :mod:`.state`: the per-origin state in SQLite (WAL, compare-and-swap, durable before answering);
* :mod:`.service`: locks per origin, cosigning (c2sp.org/tlog-cosignature ``cosignature/v1``);
* :mod:`.asgi`: the HTTP interface as a plain ASGI app; :mod:`.server`: keys, flags and uvicorn.

Log side (``kfm witness-push``, ``kfm append --witness``):

* :mod:`.client`: one witness over :mod:`http.client`, answers verified;
* :mod:`.push`: send the checkpoint with a consistency proof, store the cosignatures.

Imported lazily by the CLI: nothing here is loaded by ``kfm --help``.
"""

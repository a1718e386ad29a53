"""The log on the network (docs/network.md).

* :mod:`.server`: the ASGI application of ``kfm serve``: the c2sp.org/tlog-tiles read API
  (``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]``, ``/tile/entries/<N>[.p/<W>]``) and the lookup API
  (``/lookup/<commit>``, ``/proof/<commit>``, ``/checkpoints/<size>``); :mod:`.lookup` answers
  the lookups from the ledger (proven); :mod:`.serve` runs it under uvicorn.
* :mod:`.http_client`, :mod:`.remote`, :mod:`.consistency`, :mod:`.state`, :mod:`.client`: the
  trustless client (``kfm client prove`` / ``check``): it trusts nothing the server says.
* :mod:`.monitor`: ``kfm monitor``, tailing a log over HTTP.
"""

"""A worker process of threshold CKKS (``python -m fedicd.secure.threshold.worker``): calls the per-ciphertext
functions it is sent, ``fn(item, *args)``, through :func:`fedicd.secure.ckks_procs.serve` (see
:mod:`~fedicd.secure.threshold.parallel`). The functions are this package's top-level ones, sent by reference."""

from __future__ import annotations

from fedicd.secure.ckks_procs import serve


def _call(state, fn, item, args):
    return state, fn(item, *args)


if __name__ == "__main__":
    serve({"call": _call})

"""Secure aggregation for fedicd's federated runs: addition-only CKKS (TenSEAL), threshold CKKS (OpenFHE) and
Flower's SecAgg+.

Nothing is imported here (a config load must not pull in TenSEAL); import the modules:

* :mod:`fedicd.secure.config` — the ``[secure_aggregation]`` section and the compatibility checks.
* :mod:`fedicd.secure.ckks` and its ``ckks_*`` modules — keys, parameters, client-side encryption,
  server-side addition, decryption; :mod:`fedicd.secure.ckks_round` — who holds which key in a round;
  :mod:`~fedicd.secure.ckks_poly` (seed expansion, the c0 wire format), :mod:`~fedicd.secure.ckks_sum` (the
  server's in-memory addition), :mod:`~fedicd.secure.ckks_workers` and :mod:`~fedicd.secure.ckks_procs` (the
  clients' worker processes).
* :mod:`fedicd.secure.threshold` — multiparty CKKS on OpenFHE (joint keys, partial decryptions);
  :mod:`fedicd.secure.round_threshold` — its stages in the round loop.
* :mod:`fedicd.secure.secagg` and its ``secagg_*`` modules — Flower's SecAgg+ workflow and client mod.
* :mod:`fedicd.secure.round_ckks`, :mod:`fedicd.secure.round_secagg` — the round loop's aggregators
  (and CKKS's client codec); :mod:`fedicd.secure.round_defences` — which of them a run plan gets.
"""

"""Secure aggregation for fedicd's federated runs: addition-only CKKS (TenSEAL) and Flower's SecAgg+.

Nothing is imported here (a config load must not pull in TenSEAL); import the modules:

* :mod:`fedicd.secure.config` — the ``[secure_aggregation]`` section and the compatibility checks.
* :mod:`fedicd.secure.ckks` — keys (:func:`make_keys`, :func:`save_keys`, :func:`load_context`),
  client-side :func:`encrypt_update`, server-side :func:`aggregate_encrypted`, client-side
  :func:`decrypt_average`, the parameters (:class:`CkksParams`) and :func:`precision_bound`.
"""

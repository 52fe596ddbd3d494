"""The assembly of federated runs: a run plan's apps with their defences, and the simulation driver.

* :mod:`fedicd.runner.staging` — stage the data and write the run plan (:mod:`fedicd.run_plan`).
* :mod:`fedicd.runner.apps` — the ServerApp and the ClientApp of a planned run, with the defences of
  :mod:`fedicd.privacy` and :mod:`fedicd.secure` around the generic engine of :mod:`fedicd.federated`.
* :mod:`fedicd.runner.simulation` — :func:`~fedicd.runner.simulation.run_federated`: stage, simulate on
  Flower's Ray engine, write the results (:mod:`fedicd.runner.results`).

The apps also run unchanged on Flower's deployment engine (``run-dir`` in the run config).
"""

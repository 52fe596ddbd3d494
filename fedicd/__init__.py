"""fedicd: federated ICD coding over frozen text embeddings, built to be attacked."""

__version__ = "0.1.0"

"""Deployment on real machines (Flower's deployment engine): TLS certificates, SuperNode keys, port checks."""

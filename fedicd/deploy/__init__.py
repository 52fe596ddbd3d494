"""Deployment on real machines (Flower's deployment engine): certificates for TLS."""

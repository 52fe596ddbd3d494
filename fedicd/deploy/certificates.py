"""A local certificate authority and TLS certificates for a Flower deployment on one's own machines.

For tests and a quick start only: a real study uses certificates from the hospitals' own PKI. Everything is
made with the ``cryptography`` package (a Flower dependency), ECDSA P-384 keys and SHA-384 signatures:

* ``ca.crt`` / ``ca.key``: a self-signed CA (``basicConstraints CA:TRUE``). ``ca.crt`` is public (every SuperNode
  and the ``flwr`` CLI trust it); ``ca.key`` signs and should then be kept offline.
* ``server.crt`` / ``server.key``: the SuperLink's certificate, signed by the CA, valid for the given host names
  and IP addresses (subjectAltName; a TLS client checks it against the address it dials).

Private keys are written with mode 0600 (readable by their owner only), certificates with 0644.
:func:`check_certificate` refuses a missing, unreadable, expired or not-yet-valid certificate, or one the given
CA did not sign, with an error that names the file and the reason.

    python -m fedicd.deploy.certificates --out certs --hosts 127.0.0.1 localhost --days 30 --nodes site-a site-b
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedicd.errors import ConfigError, DataFormatError

__all__ = ["CertificateSet", "CertificateError", "make_certificates", "check_certificate", "main"]

_HASH = hashes.SHA384()


class CertificateError(ConfigError):
    """A certificate that is missing, unreadable, expired, not yet valid or not signed by the expected CA."""


@dataclass(frozen=True)
class CertificateSet:
    """Paths of a CA and a server certificate made by :func:`make_certificates`."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    hosts: tuple[str, ...]
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # an existing file keeps its old mode through os.open


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, start: dt.datetime,
             days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start - dt.timedelta(minutes=5)).not_valid_after(start + dt.timedelta(days=days)))


def make_certificates(out_dir: str | Path, *, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 30,
                      now: dt.datetime | None = None) -> CertificateSet:
    """Write a local CA and a SuperLink certificate for ``hosts`` under ``out_dir`` (created if missing).

    Raises
    ------
    ConfigError
        ``hosts`` is empty, ``days`` < 1, or ``out_dir`` already holds certificates (never overwritten: delete
        them first, since nodes may still trust the old CA).
    """
    hosts = tuple(str(h).strip() for h in hosts)
    if not hosts or not all(hosts):
        raise ConfigError(f"hosts = {list(hosts)}: give the SuperLink's host names or IP addresses (e.g. 127.0.0.1)")
    if days < 1:
        raise ConfigError(f"days = {days}: a certificate must be valid for at least one day")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("ca.crt", "ca.key", "server.crt", "server.key")
    present = [n for n in names if (out / n).exists()]
    if present:
        raise ConfigError(f"{out} already holds {present}: refusing to overwrite certificates that nodes may "
                          "trust; delete them or choose another folder")
    start = now or _now()
    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedicd local CA")])
    ca_cert = (_builder("fedicd local CA", ca_name, ca_key, start, days)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .sign(ca_key, _HASH))
    server_cert = (_builder(hosts[0], ca_name, server_key, start, days)
                   .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, _HASH))
    paths = CertificateSet(out / "ca.crt", out / "ca.key", out / "server.crt", out / "server.key", hosts,
                           server_cert.not_valid_after_utc)
    _write(paths.ca_key, _key_bytes(ca_key), 0o600)
    _write(paths.server_key, _key_bytes(server_key), 0o600)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _load(path: Path) -> x509.Certificate:
    if not path.exists():
        raise CertificateError(f"certificate not found: {path}")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as err:
        raise CertificateError(f"certificate {path} cannot be read ({err.strerror or err})") from err
    except ValueError as err:
        raise DataFormatError(f"not a PEM X.509 certificate ({err})", source=str(path)) from err


def check_certificate(path: str | Path, *, ca: str | Path | None = None,
                      now: dt.datetime | None = None) -> x509.Certificate:
    """The certificate at ``path`` once it is valid at ``now`` (default: the current time) and, with ``ca``,
    signed by that CA's key.

    Raises
    ------
    CertificateError
        Missing or unreadable file, expired or not yet valid (the dates are named), or not signed by ``ca``.
    DataFormatError
        The file is not a PEM X.509 certificate.
    """
    path = Path(path)
    cert = _load(path)
    moment = now or _now()
    if moment > cert.not_valid_after_utc:
        raise CertificateError(f"certificate {path} expired on {cert.not_valid_after_utc.isoformat()}; make new "
                               "certificates (python -m fedicd.deploy.certificates)")
    if moment < cert.not_valid_before_utc:
        raise CertificateError(f"certificate {path} is not valid before {cert.not_valid_before_utc.isoformat()} "
                               "(check the clocks of the machines)")
    if ca is not None:
        authority = _load(Path(ca))
        try:
            cert.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature) as err:
            raise CertificateError(f"certificate {path} was not signed by the CA in {ca} ({err or 'bad signature'})"
                                   ) from err
    return cert


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Make a local CA and a SuperLink TLS certificate (tests, quick start).")
    ap.add_argument("--out", type=Path, required=True, help="folder for ca.crt, ca.key, server.crt, server.key")
    ap.add_argument("--hosts", nargs="+", default=["127.0.0.1", "localhost"],
                    help="the SuperLink's host names / IP addresses (subjectAltName)")
    ap.add_argument("--days", type=int, default=30, help="validity in days")
    ap.add_argument("--nodes", nargs="*", default=[],
                    help="also make SuperNode authentication keys <out>/nodes/<name>(.pub), one per name")
    args = ap.parse_args(argv)
    made = make_certificates(args.out, hosts=args.hosts, days=args.days)
    print(f"CA {made.ca_cert} (keep {made.ca_key} offline); SuperLink {made.server_cert} + {made.server_key} for "
          f"{', '.join(made.hosts)}, valid until {made.not_after.isoformat()}")
    if args.nodes:
        from fedicd.deploy.node_keys import make_node_keys

        for key in make_node_keys(args.out / "nodes", args.nodes):
            print(f"SuperNode {key.name}: private key {key.private} (that node only), public key {key.public} "
                  "(register it: flwr supernode register)")


if __name__ == "__main__":
    main()

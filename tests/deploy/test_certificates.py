"""The local CA and SuperLink certificate: what they certify, file modes, named refusals, and a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509

from fedicd.deploy.certificates import CertificateError, check_certificate, main, make_certificates
from fedicd.errors import ConfigError, DataFormatError


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"), hosts=("127.0.0.1", "localhost"), days=10)


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("other"), days=10)


def test_the_server_certificate_names_its_hosts_and_is_signed_by_the_ca(certs) -> None:
    cert = check_certificate(certs.server_cert, ca=certs.ca_cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    ca = check_certificate(certs.ca_cert, ca=certs.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc == certs.not_after
    assert dt.timedelta(days=9) < certs.not_after - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=10)


def test_private_keys_are_readable_by_their_owner_only(certs) -> None:
    for key in (certs.ca_key, certs.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (certs.ca_cert, certs.server_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644


def test_existing_certificates_are_never_overwritten(certs) -> None:
    before = certs.server_cert.read_bytes()
    with pytest.raises(ConfigError, match=r"already holds \['ca.crt', 'ca.key', 'server.crt', 'server.key'\]"):
        make_certificates(certs.ca_cert.parent)
    assert certs.server_cert.read_bytes() == before


def test_bad_settings_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="give the SuperLink's host names"):
        make_certificates(tmp_path / "a", hosts=())
    with pytest.raises(ConfigError, match="days = 0"):
        make_certificates(tmp_path / "b", days=0)


def test_expired_and_not_yet_valid_certificates_name_the_file_and_date(certs) -> None:
    later = certs.not_after + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError, match=rf"certificate {certs.server_cert} expired on"):
        check_certificate(certs.server_cert, now=later)
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    with pytest.raises(CertificateError, match="is not valid before"):
        check_certificate(certs.server_cert, now=earlier)


def test_a_certificate_from_another_ca_is_refused(certs, other_certs) -> None:
    with pytest.raises(CertificateError, match=rf"was not signed by the CA in {other_certs.ca_cert}"):
        check_certificate(certs.server_cert, ca=other_certs.ca_cert)


def test_missing_and_garbled_files_are_named(tmp_path) -> None:
    with pytest.raises(CertificateError, match=rf"certificate not found: {tmp_path / 'nope.crt'}"):
        check_certificate(tmp_path / "nope.crt")
    garbled = tmp_path / "garbled.crt"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(DataFormatError, match=rf"file {garbled}: not a PEM X.509 certificate"):
        check_certificate(garbled)


def _serve_once(certs, port_holder: list, ready: threading.Event) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port_holder.append(server.getsockname()[1])
        ready.set()
        server.settimeout(5)
        for _ in range(2):  # one trusting client, one that refuses the server
            try:
                conn, _ = server.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                continue


def _client(ca, port: int) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(2)


def test_a_tls_handshake_succeeds_with_the_ca_and_fails_with_another(certs, other_certs) -> None:
    port, ready = [], threading.Event()
    thread = threading.Thread(target=_serve_once, args=(certs, port, ready), daemon=True)
    thread.start()
    assert ready.wait(5)
    assert _client(certs.ca_cert, port[0]) == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _client(other_certs.ca_cert, port[0])
    thread.join(10)
    assert not thread.is_alive()


def test_the_command_writes_the_four_files(tmp_path, capsys) -> None:
    main(["--out", str(tmp_path / "q"), "--hosts", "10.0.0.5", "--days", "2"])
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]
    assert "for 10.0.0.5, valid until" in capsys.readouterr().out
    check_certificate(tmp_path / "q" / "server.crt", ca=tmp_path / "q" / "ca.crt")


def test_the_command_also_makes_node_keys(tmp_path, capsys) -> None:
    main(["--out", str(tmp_path / "q"), "--nodes", "site-a", "site-b"])
    assert sorted(p.name for p in (tmp_path / "q" / "nodes").iterdir()) == ["site-a", "site-a.pub", "site-b",
                                                                           "site-b.pub"]
    assert "SuperNode site-b: private key" in capsys.readouterr().out

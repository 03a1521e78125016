"""moto's server over TLS on loopback, with a certificate made for 127.0.0.1.

Why TLS: the stack's bucket and queue policies deny every request without it
(`aws:SecureTransport` false), as they should on AWS, so a policy enforced on plain HTTP would deny
the function everything. With a certificate the function trusts through `AWS_CA_BUNDLE`
(botocore's own setting), its requests reach moto the way they reach AWS: over HTTPS.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

HOST = "127.0.0.1"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, valid for a day; the certificate is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "moto-cert.pem", folder / "moto-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsMotoServer(ThreadedMotoServer):
    """`ThreadedMotoServer` (in this process: its backends and hooks are this process's) on HTTPS."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(ip_address=HOST, port=0, verbose=False)
        self._ssl = (str(cert), str(key))

    def _server_entry(self) -> None:  # moto's own, plus the certificate
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler, ssl_context=self._ssl
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"https://{host}:{port}"

"""``sentinel edge cert``: make this edge's OPC-UA application instance certificate and its key.

OPC-UA (OPC 10000-6 6.2.2) wants the client's application URI in the certificate's
subjectAltName, beside the host's names; the edge announces the URI it finds there. The
certificate is self-signed (the server's administrator trusts it by its thumbprint, or by copying
it into the server's trusted folder), valid for signing and key encipherment, for client and
server authentication. Written:

- ``<name>.der``: the certificate, DER (what most OPC-UA servers' trust lists take);
- ``<name>.pem``: the same certificate, PEM;
- ``<name>-key.pem``: the private key, PEM PKCS#8 unencrypted, mode 0600 (the edge reads it at start);
- ``<name>.csr`` with ``--csr``: a certificate signing request with the same names and key, for a
  site CA to sign (an MQTT broker that asks for a client certificate signed by its CA).

It prints the SHA-1 thumbprint (what a server's trust list shows) and the ``[devices.security]``
lines to put in the config. Existing files are not overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import os
import socket
import sys
from pathlib import Path

__all__ = ["add_parser", "make_edge_certificate"]


def make_edge_certificate(out_dir: Path, name: str, application_uri: str, hosts: list[str], days: int = 3650,
                          key_size: int = 2048, csr: bool = False, force: bool = False) -> dict[str, Path | str]:
    """Write the certificate, its key (and a CSR); return the paths and the SHA-1 thumbprint.
    Raises FileExistsError (without ``force``) and ValueError (a bad URI or host)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if ":" not in application_uri or any(c.isspace() for c in application_uri):
        raise ValueError(f"--application-uri {application_uri!r} is not a URI (e.g. urn:acme:substation-12:edge)")
    paths = {"certificate": out_dir / f"{name}.der", "certificate_pem": out_dir / f"{name}.pem",
             "private_key": out_dir / f"{name}-key.pem"}
    if csr:
        paths["csr"] = out_dir / f"{name}.csr"
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); use --force to replace")
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c == "/" for c in host):
                raise ValueError(f"--host {host!r} is neither an IP address nor a host name") from None
            alt.append(x509.DNSName(host))
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SmartGrid Sentinel")])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(alt)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                          data_encipherment=True, key_agreement=False, key_cert_sign=True, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True).add_extension(eku, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True)
    der = cert.public_bytes(serialization.Encoding.DER)
    paths["certificate"].write_bytes(der)
    paths["certificate_pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = paths["private_key"]
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    if key_path.exists():
        key_path.unlink()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    if csr:
        request = (x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(san, critical=False)
                   .add_extension(usage, critical=True).add_extension(eku, critical=False).sign(key, hashes.SHA256()))
        paths["csr"].write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return {**paths, "thumbprint": hashlib.sha1(der).hexdigest().upper()}  # noqa: S324 - OPC-UA's thumbprint


def cmd_edge_cert(args: argparse.Namespace) -> int:
    edge_id = args.edge_id
    if args.config:
        from protocols.config import load_config

        edge_id = load_config(args.config).identity.edge_id
    hostname = socket.gethostname()
    uri = args.application_uri or f"urn:{hostname}:smartgrid-sentinel:{edge_id or 'edge'}"
    hosts = args.host or [hostname, "localhost"]
    try:
        made = make_edge_certificate(Path(args.out_dir), args.name, uri, hosts, days=args.days,
                                     key_size=args.key_size, csr=args.csr, force=args.force)
    except (FileExistsError, ValueError, OSError) as exc:
        print(f"sentinel edge cert: {exc}", file=sys.stderr)
        return 2
    print(f"certificate      {made['certificate']} (PEM: {made['certificate_pem']})")
    print(f"private key      {made['private_key']} (mode 0600)")
    if "csr" in made:
        print(f"signing request  {made['csr']}")
    print(f"application URI  {uri}")
    print(f"SHA-1 thumbprint {made['thumbprint']}")
    print("\nOn the OPC-UA server: add the certificate (.der) to its trusted client certificates, and check that")
    print("the thumbprint it shows is the one above. In the edge's config, for each OPC-UA device:\n")
    print("[devices.security]")
    print('policy = "Basic256Sha256"')
    print('mode = "SignAndEncrypt"')
    print(f'certificate = "{Path(made["certificate"]).resolve()}"')
    print(f'private_key = "{Path(made["private_key"]).resolve()}"')
    return 0


def add_parser(edge: argparse._SubParsersAction) -> None:
    s = edge.add_parser("cert", help="make this edge's OPC-UA client certificate and key (and a CSR for TLS)")
    s.add_argument("--out-dir", required=True,
                   help="directory to write <name>.der, <name>.pem, <name>-key.pem into")
    s.add_argument("--name", default="edge", help="file name stem and certificate common name (default: edge)")
    s.add_argument("--config", default=None, help="firmware config (TOML): take the edge id from it")
    s.add_argument("--edge-id", default="", help="edge id for the default application URI (without --config)")
    s.add_argument("--application-uri", default="",
                   help="the application URI for the subjectAltName "
                        "(default: urn:<hostname>:smartgrid-sentinel:<edge id>)")
    s.add_argument("--host", action="append", default=None,
                   help="host name or IP address for the subjectAltName "
                        "(repeat; default: this host's name, localhost)")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default: 3650)")
    s.add_argument("--key-size", type=int, default=2048, choices=(2048, 3072, 4096),
                   help="RSA key size (default: 2048)")
    s.add_argument("--csr", action="store_true", help="also write <name>.csr for a CA to sign (MQTT TLS client)")
    s.add_argument("--force", action="store_true", help="replace existing files")
    s.set_defaults(func=cmd_edge_cert)

#!/usr/bin/env python3
"""Test certificates for linesight's TLS / mTLS integration tests, made fresh at test time.

    certs.py OUTDIR [--days N]

Writes into OUTDIR (created if missing; existing files are overwritten), all PEM, keys ECDSA
P-256 in unencrypted PKCS#8 ("BEGIN PRIVATE KEY"), signatures ECDSA-SHA256, X.509 v3:

    ca.pem / ca.key                         private test CA (CA:true, keyCertSign, cRLSign)
    server.pem / server.key                 CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1,
                                            EKU serverAuth, signed by the CA
    client.pem / client.key                 CN=linesight-test, EKU clientAuth, signed by the CA
    expired-client.pem / .key               as client (CN=linesight-expired), valid from 10 days
                                            ago to 1 day ago, signed by the CA
    expired-server.pem / .key               as server, valid from 10 days ago to 1 day ago
    other-ca.pem / other-ca.key             a second, unrelated CA (same subject pattern, other key)
    wrong-ca-server.pem / .key              as server, signed by the other CA
    wrong-ca-client.pem / .key              as client (CN=linesight-wrong-ca), signed by the other CA

Every certificate has SubjectKeyIdentifier and (on leaves, and self-referencing on CAs)
AuthorityKeyIdentifier; leaves have BasicConstraints CA:false and KeyUsage digitalSignature,
as rustls/webpki and OpenSSL 3 (mosquitto 2.0) want. Valid certificates run from 1 hour ago
(clock skew) to --days from now (default 30); the CAs from 30 days ago (so the expired leaves
lie inside their issuer's validity and fail only for being expired) to 10 years from now.

Files are made readable by everyone (0644; OUTDIR 0755), keys included: they are throwaway
test keys, and mosquitto started as root drops to the `mosquitto` user, which must still be
able to read them. Prints one JSON line: {"dir": OUTDIR, "files": [...]}.
Needs the `cryptography` package (the test venv, scripts/setup.sh).
"""

import argparse
import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = datetime.timezone.utc


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def name(cn, org="linesight tests"):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def make_ca(cn, now):
    key = new_key()
    subject = name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(ca_cert, ca_key, cn, server, not_before, not_after):
    key = new_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value),
            critical=False)
    )
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def write(outdir, stem, cert, key, written):
    for path, data in (
        (os.path.join(outdir, stem + ".pem"), cert.public_bytes(serialization.Encoding.PEM)),
        (os.path.join(outdir, stem + ".key"), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())),
    ):
        tmp = path + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(os.path.basename(path))


def main():
    ap = argparse.ArgumentParser(description="Make the TLS test certificates.")
    ap.add_argument("outdir")
    ap.add_argument("--days", type=int, default=30, help="validity of the valid leaves (days)")
    args = ap.parse_args()

    os.makedirs(args.outdir, exist_ok=True)
    os.chmod(args.outdir, 0o755)
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=args.days))
    expired = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))

    written = []
    ca, ca_key = make_ca("linesight test CA", now)
    other, other_key = make_ca("linesight other test CA", now)
    write(args.outdir, "ca", ca, ca_key, written)
    write(args.outdir, "other-ca", other, other_key, written)
    for stem, issuer, issuer_key, cn, server, validity in (
        ("server", ca, ca_key, "localhost", True, valid),
        ("client", ca, ca_key, "linesight-test", False, valid),
        ("expired-client", ca, ca_key, "linesight-expired", False, expired),
        ("expired-server", ca, ca_key, "localhost", True, expired),
        ("wrong-ca-server", other, other_key, "localhost", True, valid),
        ("wrong-ca-client", other, other_key, "linesight-wrong-ca", False, valid),
    ):
        cert, key = make_leaf(issuer, issuer_key, cn, server, *validity)
        write(args.outdir, stem, cert, key, written)
    print(json.dumps({"dir": os.path.abspath(args.outdir), "files": written}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

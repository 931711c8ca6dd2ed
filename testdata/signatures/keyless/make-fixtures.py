#!/usr/bin/env python3
"""Write keyless signature fixtures the way cosign lays them out, made by a tiny Sigstore
instance of our own: a Fulcio-like CA (root + intermediate, P-384), a Rekor-like log key
(P-256), no CT log and no TSA.

Outputs (next to this script):
  trusted_root.json           the instance's trusted root (Sigstore's JSON form)
  other-ca.trusted_root.json  the same log, but another CA: the certificates do not chain to it
  classic.manifest.json       a cosign v2 keyless `.sig` manifest: one simple-signing layer
                              with signature, certificate, chain and Rekor bundle annotations
  classic.payload.json        that layer's payload
  bundle.json                 a cosign v3 keyless Sigstore bundle v0.3: DSSE envelope around
                              cosign's in-toto statement, certificate, Rekor `dsse` entry with
                              inclusion proof, signed checkpoint and SET

Needs python3 with `cryptography`. The signatures differ on every run (ECDSA); the tests only
rely on what is fixed below. These are not made by cosign: the e2e tests with a local
Sigstore stack and real cosign are what prove interoperability.
"""

import base64
import datetime as dt
import hashlib
import json
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OUT = pathlib.Path(__file__).resolve().parent

# What the fixtures are about (the Rust tests use the same values).
SIGNED_DIGEST = "sha256:aaead6d06e9a0ff201d39f8f5f2410c940ae4856b7f4aa19cc1f1af5985ad9a5"
DOCKER_REFERENCE = "registry.berth.test/team/app"
ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main"
CLAIMS = {
    "1.3.6.1.4.1.57264.1.9": SUBJECT,  # build signer URI
    "1.3.6.1.4.1.57264.1.11": "github-hosted",  # runner environment
    "1.3.6.1.4.1.57264.1.12": "https://github.com/acme/shop",  # source repository URI
    "1.3.6.1.4.1.57264.1.13": "0123456789abcdef0123456789abcdef01234567",  # source digest
    "1.3.6.1.4.1.57264.1.14": "refs/heads/main",  # source repository ref
    "1.3.6.1.4.1.57264.1.18": SUBJECT,  # build config URI
    "1.3.6.1.4.1.57264.1.20": "push",  # build trigger
}
NOT_BEFORE = dt.datetime(2026, 1, 15, 12, 0, 0, tzinfo=dt.timezone.utc)
NOT_AFTER = NOT_BEFORE + dt.timedelta(minutes=10)  # Fulcio's certificates live 10 minutes
CLASSIC_LOGGED = NOT_BEFORE + dt.timedelta(minutes=1)
BUNDLE_LOGGED = NOT_BEFORE + dt.timedelta(minutes=2)
CA_FROM = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
LOG_ORIGIN = "rekor.berth.test - 4242424242424242"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def canonical(value) -> bytes:
    """RFC 8785 for what we write: sorted keys, no spaces, ASCII strings and integers only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 0x80 * 0x100
    length = bytes([len(raw)]) if len(raw) < 0x80 else bytes([0x81, len(raw)]) if len(raw) < 0x100 else bytes([0x82, len(raw) >> 8, len(raw) & 0xFF])
    return b"\x0c" + length + raw


def spki(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "berth test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ca(cn: str, key, issuer_name, issuer_key, path_length, code_signing):
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CA_FROM)
        .not_valid_after(CA_FROM + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA384())


def fulcio():
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = ca("berth test Fulcio root", root_key, name("berth test Fulcio root"), root_key, 1, False)
    int_key = ec.generate_private_key(ec.SECP384R1())
    intermediate = ca("berth test Fulcio intermediate", int_key, root.subject, root_key, 0, True)
    return root, intermediate, int_key


def leaf_certificate(intermediate, int_key, leaf_key):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(intermediate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SUBJECT)]), critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(int_key.public_key()), critical=False
        )
        # Fulcio's issuer, in the legacy raw form (.1.1) and the DER form (.1.8).
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), ISSUER.encode()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8"), der_utf8(ISSUER)),
            critical=False,
        )
    )
    for oid, value in CLAIMS.items():
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), der_utf8(value)), critical=False
        )
    return builder.sign(int_key, hashes.SHA384())


def pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def trusted_root(log_key, ca_chain):
    log_spki = spki(log_key)
    return {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [
            {
                "baseUrl": "https://rekor.berth.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(log_spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2025-01-01T00:00:00Z"},
                },
                "logId": {"keyId": b64(hashlib.sha256(log_spki).digest())},
            }
        ],
        "certificateAuthorities": [
            {
                "subject": {"organization": "berth test", "commonName": "berth test Fulcio"},
                "uri": "https://fulcio.berth.test",
                "certChain": {"certificates": [{"rawBytes": b64(der(c))} for c in ca_chain]},
                "validFor": {"start": "2025-01-01T00:00:00Z"},
            }
        ],
        "ctlogs": [],
        "timestampAuthorities": [],
    }


def sign(key, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def rekor_entry(log_key, body: bytes, log_index: int, logged: dt.datetime):
    """The Rekor v1 fields of an entry and its SET."""
    log_id = hashlib.sha256(spki(log_key)).hexdigest()
    integrated = int(logged.timestamp())
    set_payload = canonical(
        {"body": b64(body), "integratedTime": integrated, "logID": log_id, "logIndex": log_index}
    )
    return log_id, integrated, sign(log_key, set_payload)


def inclusion(log_key, body: bytes):
    """A two-leaf tree whose second leaf is `body`, and its signed checkpoint."""
    other = hashlib.sha256(b"\x00" + b"an earlier entry").digest()
    mine = hashlib.sha256(b"\x00" + body).digest()
    root = hashlib.sha256(b"\x01" + other + mine).digest()
    note = f"{LOG_ORIGIN}\n2\n{b64(root)}\n"
    hint = hashlib.sha256(spki(log_key)).digest()[:4]
    signature = b64(hint + sign(log_key, note.encode()))
    envelope = f"{note}\n\u2014 {LOG_ORIGIN.split(' ')[0]} {signature}\n"
    return {
        "logIndex": "1",
        "rootHash": b64(root),
        "treeSize": "2",
        "hashes": [b64(other)],
        "checkpoint": {"envelope": envelope},
    }


def classic(leaf, leaf_key, chain, log_key):
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": DOCKER_REFERENCE},
                "image": {"docker-manifest-digest": SIGNED_DIGEST},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = b64(sign(leaf_key, payload))
    body = canonical(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {"content": signature, "publicKey": {"content": b64(pem(leaf).encode())}},
            },
        }
    )
    log_id, integrated, set_sig = rekor_entry(log_key, body, 42, CLASSIC_LOGGED)
    rekor_bundle = json.dumps(
        {
            "SignedEntryTimestamp": b64(set_sig),
            "Payload": {"body": b64(body), "integratedTime": integrated, "logIndex": 42, "logID": log_id},
        },
        separators=(",", ":"),
    )
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "size": len(payload),
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "annotations": {
            "dev.cosignproject.cosign/signature": signature,
            "dev.sigstore.cosign/bundle": rekor_bundle,
            "dev.sigstore.cosign/certificate": pem(leaf),
            "dev.sigstore.cosign/chain": "".join(pem(c) for c in chain),
        },
    }
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 0, "digest": "sha256:" + hashlib.sha256(b"").hexdigest()}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    }
    return manifest, payload


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def bundle(leaf, leaf_key, log_key):
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": SIGNED_DIGEST.split(":")[1]}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1",
            "predicate": {},
        },
        separators=(",", ":"),
    ).encode()
    payload_type = "application/vnd.in-toto+json"
    signature = b64(sign(leaf_key, pae(payload_type, statement)))
    envelope = {"payload": b64(statement), "payloadType": payload_type, "signatures": [{"sig": signature}]}
    body = canonical(
        {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(canonical(envelope)).hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(statement).hexdigest()},
                "signatures": [{"signature": signature, "verifier": b64(pem(leaf).encode())}],
            },
        }
    )
    log_id, integrated, set_sig = rekor_entry(log_key, body, 43, BUNDLE_LOGGED)
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": b64(der(leaf))},
            "tlogEntries": [
                {
                    "logIndex": "43",
                    "logId": {"keyId": b64(bytes.fromhex(log_id))},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": str(integrated),
                    "inclusionPromise": {"signedEntryTimestamp": b64(set_sig)},
                    "inclusionProof": inclusion(log_key, body),
                    "canonicalizedBody": b64(body),
                }
            ],
        },
        "dsseEnvelope": envelope,
    }


def write(file: str, value):
    text = value if isinstance(value, (bytes, str)) else json.dumps(value, indent=2) + "\n"
    (OUT / file).write_bytes(text if isinstance(text, bytes) else text.encode())


def main():
    root, intermediate, int_key = fulcio()
    other_root, other_intermediate, _ = fulcio()
    log_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = leaf_certificate(intermediate, int_key, leaf_key)
    write("trusted_root.json", trusted_root(log_key, [intermediate, root]))
    write("other-ca.trusted_root.json", trusted_root(log_key, [other_intermediate, other_root]))
    manifest, payload = classic(leaf, leaf_key, [intermediate, root], log_key)
    write("classic.manifest.json", manifest)
    write("classic.payload.json", payload)
    write("bundle.json", bundle(leaf, leaf_key, log_key))


if __name__ == "__main__":
    main()

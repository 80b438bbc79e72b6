"""cosign v3's signing config and trusted root for the test environment's sigstore peers.

Usage: sigstore_config.py DIR, with the WEFT_TEST_* variables of the components started (Rekor v2, Fulcio,
the timestamp authority) in the environment. Writes DIR/trusted_root.json, DIR/signing_config.json and,
with Rekor v2, DIR/signing_config_rekor2.json (Rekor v2 alone: key-based signing needs no more).

The formats are sigstore's protobuf-specs messages in their JSON form (dev.sigstore.trustroot.v1
TrustedRoot and SigningConfig), as sigstore-go reads them: the trusted root's media type is v0.1 (the one
sigstore-go accepts), the signing config's v0.2. A Rekor v2 log is told from a v1 log by its checkpoint:
its origin is taken from the host of baseUrl, and its log id (as for a v1 log, for an ECDSA key) is the
SHA-256 of the key's DER SubjectPublicKeyInfo.
"""
import base64
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys


def der(args, data=None):
    return subprocess.run(["openssl", *args, "-outform", "DER"], input=data, capture_output=True, check=True).stdout


def pem_certs(path):
    with open(path) as f:
        blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", f.read(), re.S)
    return [der(["x509"], b.encode()) for b in blocks]


def subject(cert_der):
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "RFC2253"],
                         input=cert_der, capture_output=True, check=True).stdout.decode()
    fields = dict(p.split("=", 1) for p in out.strip().removeprefix("subject=").split(",") if "=" in p)
    return {k: v for k, v in (("organization", fields.get("O")), ("commonName", fields.get("CN"))) if v}


def b64(b):
    return base64.b64encode(b).decode()


def main():
    out = sys.argv[1]
    env = os.environ
    # Every key and root here was made when the environment started; an hour earlier covers them all.
    start = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    valid = {"start": start}

    def service(url, version):
        return {"url": url, "majorApiVersion": version, "validFor": valid, "operator": "weft-test"}

    root = {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [], "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": []}
    signing = {"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
               "caUrls": [], "oidcUrls": [], "rekorTlogUrls": [], "tsaUrls": [],
               "rekorTlogConfig": {"selector": "ANY"}, "tsaConfig": {"selector": "ANY"}}

    if env.get("WEFT_TEST_REKOR2_URL"):
        key = der(["pkey", "-pubin", "-in", env["WEFT_TEST_REKOR2_PUBLIC_KEY"]])
        root["tlogs"].append({
            "baseUrl": env["WEFT_TEST_REKOR2_URL"],
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(key), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": valid},
            "logId": {"keyId": b64(hashlib.sha256(key).digest())},
        })
        signing["rekorTlogUrls"].append(service(env["WEFT_TEST_REKOR2_URL"], 2))
    if env.get("WEFT_TEST_FULCIO_URL"):
        chain = pem_certs(env["WEFT_TEST_FULCIO_ROOT"])
        root["certificateAuthorities"].append({
            "subject": subject(chain[-1]), "uri": env["WEFT_TEST_FULCIO_URL"],
            "certChain": {"certificates": [{"rawBytes": b64(c)} for c in chain]}, "validFor": valid,
        })
        signing["caUrls"].append(service(env["WEFT_TEST_FULCIO_URL"], 1))
    if env.get("WEFT_TEST_TSA_URL"):
        chain = pem_certs(env["WEFT_TEST_TSA_CHAIN"])  # leaf first, root last
        root["timestampAuthorities"].append({
            "subject": subject(chain[-1]), "uri": env["WEFT_TEST_TSA_URL"],
            "certChain": {"certificates": [{"rawBytes": b64(c)} for c in chain]}, "validFor": valid,
        })
        signing["tsaUrls"].append(service(env["WEFT_TEST_TSA_URL"], 1))

    with open(os.path.join(out, "trusted_root.json"), "w") as f:
        json.dump(root, f, indent=2)
    with open(os.path.join(out, "signing_config.json"), "w") as f:
        json.dump(signing, f, indent=2)
    if env.get("WEFT_TEST_REKOR2_URL"):
        only_log = dict(signing, caUrls=[], tsaUrls=[])
        with open(os.path.join(out, "signing_config_rekor2.json"), "w") as f:
            json.dump(only_log, f, indent=2)


if __name__ == "__main__":
    main()

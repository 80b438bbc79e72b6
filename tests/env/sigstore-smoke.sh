#!/usr/bin/env bash
# The test environment's sigstore peers, end to end with cosign v3, as a user would run them:
#   1. keyless: a ServiceAccount token (audience `sigstore`) from the test kube-apiserver, a certificate
#      from Fulcio, a signed timestamp from the timestamp authority, the entry in Rekor v2; verify-blob
#      with the certificate's identity and issuer and the environment's trusted root;
#   2. key-based: an image in the test registry signed with a cosign key pair, logged in Rekor v2 (a
#      signing config naming only the log), then `cosign verify --key`;
#   and that verification refuses what it should (another identity, another key, another blob).
# Run it inside the environment: tests/env/testenv.sh run -- tests/env/sigstore-smoke.sh
# (components kube, registry, rekor2, fulcio and tsa). Exits non-zero on the first failure.
set -euo pipefail

for v in WEFT_TEST_COSIGN3 WEFT_TEST_KUBECTL WEFT_TEST_REGISTRY WEFT_TEST_REKOR2_URL WEFT_TEST_FULCIO_URL \
  WEFT_TEST_TSA_URL WEFT_TEST_OIDC_ISSUER WEFT_TEST_SIGNING_CONFIG WEFT_TEST_SIGNING_CONFIG_REKOR2 \
  WEFT_TEST_TRUSTED_ROOT; do
  [ -n "${!v:-}" ] || { echo "sigstore-smoke: $v is not set: run inside tests/env/testenv.sh with kube, registry, rekor2, fulcio and tsa" >&2; exit 2; }
done

cosign=$WEFT_TEST_COSIGN3
kubectl=$WEFT_TEST_KUBECTL
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
log() { printf '[sigstore-smoke] %s\n' "$*" >&2; }
ok() { log "ok: $*"; passed=$((passed + 1)); }
fail() { log "FAILED: $*"; failed=$((failed + 1)); }
# refuses DESCRIPTION COMMAND...: the command must fail.
refuses() {
  local what=$1; shift
  if "$@" > "$work/refused.log" 2>&1; then fail "$what (was accepted)"
  else ok "$what: $(grep -m 1 '^Error: ' "$work/refused.log" || tail -n 1 "$work/refused.log")"; fi
}

ns=sigstore-smoke-$$
sa=signer
identity="https://kubernetes.io/namespaces/$ns/serviceaccounts/$sa"
"$kubectl" create namespace "$ns" >/dev/null
trap 'rm -rf "$work"; "$kubectl" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true' EXIT
"$kubectl" create serviceaccount "$sa" -n "$ns" >/dev/null
token=$("$kubectl" create token "$sa" -n "$ns" --audience sigstore --duration 10m)

# 1. Keyless, a blob.
printf 'weft sigstore smoke %s\n' "$(date -u +%FT%TZ)" > "$work/blob.txt"
if "$cosign" sign-blob "$work/blob.txt" --identity-token "$token" --signing-config "$WEFT_TEST_SIGNING_CONFIG" \
  --trusted-root "$WEFT_TEST_TRUSTED_ROOT" --bundle "$work/blob.bundle" --yes > "$work/sign-blob.log" 2>&1; then
  ok "keyless sign-blob (Fulcio certificate, timestamp, Rekor v2 entry)"
else
  cat "$work/sign-blob.log" >&2; fail "keyless sign-blob"
fi
# What the bundle holds: the certificate's identity and issuer, a Rekor v2 entry (hashedrekord 0.0.2, an
# inclusion proof whose checkpoint names the log's origin) and a signed timestamp.
if python3 - "$work/blob.bundle" "$identity" "$WEFT_TEST_OIDC_ISSUER" "$WEFT_TEST_REKOR2_ORIGIN" > "$work/bundle.log" 2>&1 <<'PY'
import base64, json, subprocess, sys
bundle, identity, issuer, origin = sys.argv[1:]
b = json.load(open(bundle))
vm = b["verificationMaterial"]
cert = base64.b64decode(vm["certificate"]["rawBytes"])
text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"], input=cert, capture_output=True, check=True).stdout.decode()
assert f"URI:{identity}" in text, "certificate SAN is not " + identity
assert issuer in text, "certificate does not name issuer " + issuer
entry = vm["tlogEntries"][0]
assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}, entry["kindVersion"]
assert entry["inclusionProof"]["checkpoint"]["envelope"].startswith(origin + "\n"), "checkpoint origin"
assert vm["timestampVerificationData"]["rfc3161Timestamps"], "no signed timestamp"
print("certificate", identity, "from", issuer, "; Rekor v2 entry", entry["logIndex"] if "logIndex" in entry else 0)
PY
then ok "bundle: $(cat "$work/bundle.log")"; else cat "$work/bundle.log" >&2; fail "bundle contents"; fi

verify_blob=("$cosign" verify-blob "$work/blob.txt" --bundle "$work/blob.bundle" --trusted-root "$WEFT_TEST_TRUSTED_ROOT"
  --certificate-oidc-issuer "$WEFT_TEST_OIDC_ISSUER" --insecure-ignore-sct)
if "${verify_blob[@]}" --certificate-identity "$identity" > "$work/verify-blob.log" 2>&1; then
  ok "keyless verify-blob --certificate-identity $identity --certificate-oidc-issuer $WEFT_TEST_OIDC_ISSUER"
else
  cat "$work/verify-blob.log" >&2; fail "keyless verify-blob"
fi
refuses "verify-blob refuses another identity" "${verify_blob[@]}" \
  --certificate-identity "https://kubernetes.io/namespaces/$ns/serviceaccounts/someone-else"
# Without a CT log Fulcio's certificates carry no SCT: verification asks for one unless told not to.
refuses "verify-blob asks for an SCT unless --insecure-ignore-sct" "$cosign" verify-blob "$work/blob.txt" \
  --bundle "$work/blob.bundle" --trusted-root "$WEFT_TEST_TRUSTED_ROOT" --certificate-identity "$identity" \
  --certificate-oidc-issuer "$WEFT_TEST_OIDC_ISSUER"
printf 'tampered\n' >> "$work/blob.txt"
refuses "verify-blob refuses another blob" "${verify_blob[@]}" --certificate-identity "$identity"

# 2. Key-based, an image in the registry, logged in Rekor v2 only.
printf 'weft sigstore smoke\n' > "$work/file.txt"
tar -C "$work" -cf "$work/layer.tar" file.txt
crane=$(command -v crane)
"$crane" append --new_tag "$WEFT_TEST_REGISTRY/sigstore-smoke:$$" --new_layer "$work/layer.tar" > /dev/null 2>&1
image="$WEFT_TEST_REGISTRY/sigstore-smoke@$("$crane" digest "$WEFT_TEST_REGISTRY/sigstore-smoke:$$")"
(cd "$work" && COSIGN_PASSWORD="" "$cosign" generate-key-pair --output-key-prefix key > /dev/null 2>&1)
(cd "$work" && COSIGN_PASSWORD="" "$cosign" generate-key-pair --output-key-prefix other > /dev/null 2>&1)
if COSIGN_PASSWORD="" "$cosign" sign --key "$work/key.key" --signing-config "$WEFT_TEST_SIGNING_CONFIG_REKOR2" \
  --trusted-root "$WEFT_TEST_TRUSTED_ROOT" --yes "$image" > "$work/sign.log" 2>&1; then
  ok "key-based sign of $image (Rekor v2 entry)"
else
  cat "$work/sign.log" >&2; fail "key-based sign"
fi
if "$cosign" verify --key "$work/key.pub" --trusted-root "$WEFT_TEST_TRUSTED_ROOT" "$image" > "$work/verify.log" 2>&1; then
  ok "key-based verify --key (the log's inclusion proof checked offline)"
else
  cat "$work/verify.log" >&2; fail "key-based verify"
fi
refuses "verify refuses another key" "$cosign" verify --key "$work/other.pub" --trusted-root "$WEFT_TEST_TRUSTED_ROOT" "$image"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r["tlogs"] = []; json.dump(r, open(sys.argv[2], "w"))' \
  "$WEFT_TEST_TRUSTED_ROOT" "$work/no-log-root.json"
refuses "verify refuses a trusted root without the log" "$cosign" verify --key "$work/key.pub" \
  --trusted-root "$work/no-log-root.json" "$image"

# The log's checkpoint, as a reader of its tiles sees it: signed by the origin, two entries or more.
if curl -sf "${WEFT_TEST_REKOR2_READ_URL:?}/checkpoint" > "$work/checkpoint" \
  && [ "$(sed -n 1p "$work/checkpoint")" = "$WEFT_TEST_REKOR2_ORIGIN" ] && [ "$(sed -n 2p "$work/checkpoint")" -ge 2 ] \
  && grep -q "^— $WEFT_TEST_REKOR2_ORIGIN " "$work/checkpoint"; then
  ok "Rekor v2 checkpoint: origin $(sed -n 1p "$work/checkpoint"), size $(sed -n 2p "$work/checkpoint")"
else
  cat "$work/checkpoint" >&2 || true; fail "Rekor v2 checkpoint"
fi

if [ "$failed" -eq 0 ]; then log "all $passed checks passed"; else log "$failed of $((passed + failed)) checks failed"; exit 1; fi

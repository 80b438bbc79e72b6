#!/usr/bin/env bash
# Keyless, end to end, with no long-lived key anywhere: a ServiceAccount's token (audience sigstore) buys
# a Fulcio certificate, `weft run` signs and attests the example Application with it, cosign accepts
# the result for exactly that identity, and kubectl-sigstore checks the applied objects against it.
#
# Run it in the test environment (a kube-apiserver, which is Fulcio's OIDC issuer, Fulcio, a registry
# and Rekor):
#   WEFT_TESTENV_COMPONENTS="kube registry rekor fulcio" tests/env/testenv.sh run -- examples/keyless.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for v in WEFT_TEST_FULCIO_URL WEFT_TEST_FULCIO_ROOT WEFT_TEST_OIDC_ISSUER WEFT_TEST_REKOR_URL \
  WEFT_TEST_REKOR_PUBLIC_KEY WEFT_TEST_REGISTRY; do
  [ -n "${!v:-}" ] || { echo "error: $v is not set: run this in the test environment (see the header)" >&2; exit 2; }
done
echo "==> building weft"
cargo build --locked --quiet

work=$(mktemp -d -t weft-keyless.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "==> a signed git repository from examples/shop"
ssh-keygen -q -t ed25519 -N "" -C "release@example.com" -f "$work/release-key"
git init -q -b main "$work/shop"
cp examples/shop/*.yaml "$work/shop/"
git() { command git -C "$work/shop" -c user.name=Release -c user.email=release@example.com \
  -c gpg.format=ssh -c user.signingkey="$work/release-key" "$@"; }
git add -A && git commit -q -S -m "shop: cart service"
revision=$(git rev-parse HEAD)
sed -e "s#REPO_URL#file://$work/shop#g" -e "s#REVISION#$revision#g" examples/application.yaml > "$work/application.yaml"

echo "==> the signer's identity: a ServiceAccount token for Fulcio"
ns="weft-keyless-$$"
kubectl create namespace "$ns" >/dev/null
kubectl create serviceaccount weft-controller -n "$ns" >/dev/null
kubectl create token weft-controller -n "$ns" --audience sigstore > "$work/token"
identity="https://kubernetes.io/namespaces/$ns/serviceaccounts/weft-controller"
issuer=$WEFT_TEST_OIDC_ISSUER
echo "   identity $identity"
echo "   issuer   $issuer"

echo "==> the profile: keyless signing, provenance in Rekor"
repository="$WEFT_TEST_REGISTRY/manifests/keyless-$$"
python3 - "$work" "$repository" "$identity" "$issuer" <<'PY'
import base64, hashlib, json, os, subprocess, sys
work, repository, identity, issuer = sys.argv[1:]
env = os.environ
def read(path):
    return open(path).read()
def der(args, path):
    return subprocess.run(["openssl", *args, "-in", path, "-outform", "DER"], capture_output=True, check=True).stdout
docs = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-signers"},
     "data": {"allowed_signers": "release@example.com " + read(f"{work}/release-key.pub")}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rekor"},
     "data": {"rekor.pub": read(env["WEFT_TEST_REKOR_PUBLIC_KEY"])}},
]
open(f"{work}/resources.yaml", "w").write("\n---\n".join(json.dumps(d) for d in docs))
profile = {"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile",
    "metadata": {"name": "production", "namespace": "argocd"},
    "spec": {"applicationSelector": [{"name": "shop-*"}],
        "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "file:///*"}], "gpg": {"mode": "strict"},
            "ssh": {"allowedSigners": {"configMapRef": {"name": "shop-signers", "key": "allowed_signers"}}}}]}},
        "manifestSigning": {"keyless": {"fulcioURL": env["WEFT_TEST_FULCIO_URL"],
                                        "identity": {"issuer": issuer, "subject": identity}},
                            "image": {"repository": repository}},
        "provenance": {"rekor": {"url": env["WEFT_TEST_REKOR_URL"],
                                 "publicKey": {"configMapRef": {"name": "rekor", "key": "rekor.pub"}}}}}}
open(f"{work}/profile.json", "w").write(json.dumps(profile, indent=2))
# What verifiers trust: your Fulcio's root and your log (cosign's --trusted-root).
b64 = lambda b: base64.b64encode(b).decode()
log_key = der(["pkey", "-pubin"], env["WEFT_TEST_REKOR_PUBLIC_KEY"])
root = {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "tlogs": [{"baseUrl": env["WEFT_TEST_REKOR_URL"], "hashAlgorithm": "SHA2_256",
        "publicKey": {"rawBytes": b64(log_key), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                      "validFor": {"start": "1970-01-01T00:00:00Z"}},
        "logId": {"keyId": b64(hashlib.sha256(log_key).digest())}}],
    "certificateAuthorities": [{"subject": {"organization": "weft-test", "commonName": "weft-test-fulcio-root"},
        "uri": env["WEFT_TEST_FULCIO_URL"],
        "certChain": {"certificates": [{"rawBytes": b64(der(["x509"], env["WEFT_TEST_FULCIO_ROOT"]))}]},
        "validFor": {"start": "1970-01-01T00:00:00Z"}}],
    "ctlogs": [], "timestampAuthorities": []}
open(f"{work}/trusted_root.json", "w").write(json.dumps(root))
PY

echo "==> weft run (keyless)"
target/debug/weft run --application "$work/application.yaml" --profile "$work/profile.json" \
  --resources "$work/resources.yaml" --identity-token "$work/token" --cache-dir "$work/cache" \
  --output json > "$work/out.json"
image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifestImage"])' "$work/out.json")
echo "   manifest image $image"

echo "==> cosign verify / verify-attestation, for that identity and issuer"
verify=(--certificate-identity "$identity" --certificate-oidc-issuer "$issuer"
  --trusted-root "$work/trusted_root.json" --insecure-ignore-sct)
cosign verify "${verify[@]}" "$image" >/dev/null && echo "   cosign verify: the signature is $identity's"
cosign verify-attestation --type slsaprovenance1 "${verify[@]}" "$image" >/dev/null \
  && echo "   cosign verify-attestation: the provenance is $identity's"
if cosign verify --certificate-identity "https://kubernetes.io/namespaces/$ns/serviceaccounts/someone-else" \
  --certificate-oidc-issuer "$issuer" --trusted-root "$work/trusted_root.json" --insecure-ignore-sct \
  "$image" >/dev/null 2>&1; then
  echo "error: another identity was accepted" >&2
  exit 1
fi
echo "   another identity: refused"

echo "==> kubectl sigstore verify-resource, keyless (no -k): the objects as applied, against the signed image"
# kubectl-sigstore 0.5 names a signer by its certificate's email only, so it cannot match a
# ServiceAccount's URI identity: it checks that the signature chains to this Fulcio and is logged, and
# cosign (above) and Weft's webhook check whose it is.
kubectl create namespace shop >/dev/null 2>&1 || true
layer=$(crane manifest "$image" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')
crane blob "${image%@*}@$layer" > "$work/signed.yaml"
kubectl apply -f "$work/signed.yaml" >/dev/null
SIGSTORE_ROOT_FILE=$WEFT_TEST_FULCIO_ROOT SIGSTORE_REKOR_PUBLIC_KEY=$WEFT_TEST_REKOR_PUBLIC_KEY \
  kubectl sigstore verify-resource -f "$work/signed.yaml" -i "$image" --rekor-url "$WEFT_TEST_REKOR_URL" \
  --oidc-issuer "$issuer" --certificate-chain "$WEFT_TEST_FULCIO_ROOT" -o json > "$work/verify-resource.json"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; assert s["valid"] == s["total"] == 3, s; print("   kubectl-sigstore:", s)' \
  "$work/verify-resource.json"
kubectl delete namespace "$ns" shop --wait=false >/dev/null

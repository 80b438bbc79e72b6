#!/usr/bin/env bash
# Weft beside a real Argo CD, on this machine: watch Argo CD sync a signed repository and Weft vouch for
# exactly what it synced, then push an unsigned commit and watch the webhook refuse Argo CD's apply.
#
# It starts the test environment (kube-apiserver, kube-controller-manager, a registry, Rekor, Argo CD
# 3.6; built from the Go module proxy the first time, which takes a while), then:
#   - a git repository signed with a fresh SSH key, served over HTTP with a password that Argo CD and
#     Weft both read from an Argo CD repository Secret;
#   - a container image pushed to the registry and signed with cosign;
#   - an IntegrityProfile, and an automatically synced Application in namespace argocd-e2e-demo;
#   - `weft controller` and `weft webhook` (enforcing, failurePolicy Fail) as local processes.
# It leaves everything running until Ctrl-C, and prints what to try.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
echo "==> building weft"
cargo build --locked --quiet
weft=$root/target/debug/weft

work=$(mktemp -d -t weft-argocd.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/env" ] && kubectl delete validatingwebhookconfiguration weft-demo --ignore-not-found >/dev/null 2>&1 || true
  tests/env/testenv.sh stop "$work/env-dir" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> starting the test environment (first run: builds the peers)"
mkdir -p "$work/env-dir"
tests/env/testenv.sh start "$work/env-dir"
# shellcheck disable=SC1091
source "$work/env-dir/env"
ln -s "$work/env-dir/env" "$work/env"
ns=argocd-e2e-demo
dest=demo-shop
kubectl create namespace "$ns" >/dev/null

echo "==> a signed repository, served over HTTP with a password"
ssh-keygen -q -t ed25519 -N "" -C "release@example.com" -f "$work/release-key"
git init -q -b main "$work/shop"
git() { command git -C "$work/shop" -c user.name=Release -c user.email=release@example.com \
  -c gpg.format=ssh -c user.signingkey="$work/release-key" "$@"; }
image_ref="$WEFT_TEST_REGISTRY_REFERRERS/demo/shop:1.0"
mkdir -p "$work/shop/app"
sed -e "s#NAMESPACE#$dest#g" -e "s#IMAGE#$image_ref#g" > "$work/shop/app/shop.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-config, namespace: NAMESPACE}
data: {CURRENCY: EUR}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: NAMESPACE}
spec:
  selector: {app: shop}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: NAMESPACE}
spec:
  replicas: 2
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers: [{name: shop, image: IMAGE}]
YAML
git add -A && git commit -q -S -m "shop: first release"
mkdir -p "$work/served/demo"
command git clone -q --bare "$work/shop" "$work/served/demo/shop.git"
python3 tests/env/git-http-server.py "$work/served" deploy s3cret > "$work/git-port" &
pids+=($!)
while [ ! -s "$work/git-port" ]; do sleep 0.2; done
repo_url="http://127.0.0.1:$(cat "$work/git-port")/demo/shop.git"
push() { git push -q --force "$work/served/demo/shop.git" main; }

echo "==> an image, signed with cosign"
export COSIGN_PASSWORD=demo
(cd "$work" && cosign generate-key-pair --output-key-prefix images >/dev/null 2>&1 \
  && cosign generate-key-pair --output-key-prefix manifests >/dev/null 2>&1)
echo "layer" > "$work/layer" && tar -C "$work" -cf "$work/layer.tar" layer
crane append -f "$work/layer.tar" -t "$image_ref" >/dev/null 2>&1
digest=$(crane digest "$image_ref")
SIGSTORE_REKOR_PUBLIC_KEY=$WEFT_TEST_REKOR_PUBLIC_KEY cosign sign --key "$work/images.key" --rekor-url "$WEFT_TEST_REKOR_URL" \
  --tlog-upload=true -y "${image_ref%:*}@$digest" >/dev/null 2>&1

echo "==> Argo CD's repository Secret, the profile's objects, the profile and the Application"
# The image's signature is logged in this environment's Rekor: a trusted root that names it.
openssl pkey -pubin -in "$WEFT_TEST_REKOR_PUBLIC_KEY" -outform DER -out "$work/rekor.der"
python3 - "$work" "$ns" "$repo_url" "$WEFT_TEST_REKOR_URL" "$WEFT_TEST_REKOR_PUBLIC_KEY" \
  "$WEFT_TEST_REGISTRY_REFERRERS" "$dest" > "$work/objects.json" <<'PY'
import base64, hashlib, json, sys
work, ns, repo, rekor, rekor_pub, registry, dest = sys.argv[1:]
read = lambda name: open(name if name.startswith("/") else f"{work}/{name}").read()
der = open(f"{work}/rekor.der", "rb").read()
trusted_root = {
    "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "tlogs": [{"baseUrl": rekor, "hashAlgorithm": "SHA2_256",
               "publicKey": {"rawBytes": base64.b64encode(der).decode(), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                             "validFor": {"start": "2020-01-01T00:00:00Z"}},
               "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()}}],
    "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": []}
items = [
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-repo", "namespace": "argocd",
        "labels": {"argocd.argoproj.io/secret-type": "repository"}},
     "stringData": {"url": repo, "username": "deploy", "password": "s3cret"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers", "namespace": ns},
     "data": {"allowed_signers": "release@example.com " + read("release-key.pub")}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing", "namespace": ns},
     "stringData": {"cosign.key": read("manifests.key"), "cosign.password": "demo"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keys", "namespace": ns},
     "data": {"images.pub": read("images.pub"), "rekor.pub": read(rekor_pub),
              "trusted_root.json": json.dumps(trusted_root)}},
    {"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "production", "namespace": ns},
     "spec": {"applicationSelector": [{"name": "*"}],
        "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": repo}], "gpg": {"mode": "strict"},
            "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}}]}},
        "imageVerification": {"trustedRoot": {"configMapRef": {"name": "keys", "key": "trusted_root.json"}},
            "policies": [{"images": [registry + "/**"],
            "signers": [{"key": {"configMapRef": {"name": "keys", "key": "images.pub"}}}]}]},
        "manifestSigning": {"key": {"secretRef": {"name": "signing", "key": "cosign.key"}, "passwordKey": "cosign.password"},
            "image": {"repository": registry + "/manifests/demo"}},
        "provenance": {"rekor": {"url": rekor, "publicKey": {"configMapRef": {"name": "keys", "key": "rekor.pub"}}}},
        "enforcement": {"mode": "enforce"}}},
    {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "shop", "namespace": ns},
     "spec": {"project": "default", "source": {"repoURL": repo, "path": "app", "targetRevision": "main"},
        "destination": {"server": "https://kubernetes.default.svc", "namespace": dest},
        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["CreateNamespace=true"],
            "retry": {"limit": 5, "backoff": {"duration": "2s", "factor": 2, "maxDuration": "8s"}}}}},
]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
kubectl apply -f "$work/objects.json" >/dev/null

echo "==> weft controller and weft webhook (enforcing, failurePolicy Fail, for namespace $dest)"
"$weft" controller --namespace "$ns" --cache-dir "$work/cache" > "$work/controller.log" 2>&1 &
pids+=($!)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl apply -f - >/dev/null <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: weft-demo}
webhooks:
  - name: validate.weft.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    clientConfig: {url: "https://127.0.0.1:$port/validate"}
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $dest}}
    rules: [{apiGroups: ["*"], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: ["*/*"], scope: Namespaced}]
YAML
"$weft" webhook --listen "127.0.0.1:$port" --cert-host 127.0.0.1 --cert-namespace "$ns" \
  --webhook-configuration weft-demo > "$work/webhook.log" 2>&1 &
pids+=($!)

echo "==> waiting for Argo CD to sync and Weft to vouch for the revision"
for _ in $(seq 1 120); do
  verdict=$(kubectl get appprov shop -n "$ns" -o jsonpath='{.status.verdict}' 2>/dev/null || true)
  synced=$(kubectl get application shop -n "$ns" -o jsonpath='{.status.sync.status}' 2>/dev/null || true)
  [ "$verdict" = Verified ] && [ "$synced" = Synced ] && break
  sleep 2
done
kubectl get application shop -n "$ns"
kubectl get appprov shop -n "$ns"
if [ "$verdict" != Verified ] || [ "$synced" != Synced ]; then
  echo "error: not synced and vouched for within 4 minutes; see $work/controller.log and the status above" >&2
  kubectl get appprov shop -n "$ns" -o yaml >&2
  exit 1
fi
image=$(kubectl get appprov shop -n "$ns" -o jsonpath='{.status.manifestImage}')
cat <<EOF

Argo CD synced $(git rev-parse --short HEAD); Weft vouched for it and signed what Argo CD applied as $image.
Environment: source $work/env-dir/env   (kubectl, argocd, cosign, kubectl-sigstore on PATH)

Try:
  # what a security team checks: every object Argo CD applied, against the signed manifests
  SIGSTORE_REKOR_PUBLIC_KEY=\$WEFT_TEST_REKOR_PUBLIC_KEY SIGSTORE_ROOT_FILE=$work/env-dir/certs/ca.crt \\
    kubectl sigstore verify-resource -i $image -k $work/manifests.pub --rekor-url \$WEFT_TEST_REKOR_URL \\
    -c examples/verify-resource-config.yaml
  # an unsigned commit: Weft's verdict names it, and the webhook refuses Argo CD's apply
  sed -i s/EUR/USD/ $work/shop/app/shop.yaml && \\
    git -C $work/shop -c user.name=You -c user.email=you@example.com commit -qam "unsigned" && \\
    git -C $work/shop push -q --force $work/served/demo/shop.git main
  kubectl annotate application shop -n $ns argocd.argoproj.io/refresh=hard --overwrite
  kubectl get appprov shop -n $ns -o wide; kubectl get application shop -n $ns -o jsonpath='{.status.operationState.message}'
Logs: $work/controller.log, $work/webhook.log, $work/env-dir/logs/. Ctrl-C stops everything.
EOF
if [ ! -t 0 ]; then
  # Not at a terminal (as tests/run runs it): check the first hint works as printed, then stop.
  SIGSTORE_REKOR_PUBLIC_KEY=$WEFT_TEST_REKOR_PUBLIC_KEY SIGSTORE_ROOT_FILE=$work/env-dir/certs/ca.crt \
    kubectl sigstore verify-resource -i "$image" -k "$work/manifests.pub" --rekor-url "$WEFT_TEST_REKOR_URL" \
    -c examples/verify-resource-config.yaml
  exit 0
fi
while sleep 3600; do :; done

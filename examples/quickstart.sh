#!/usr/bin/env bash
# Weft's main job on embedded defaults: a git repository made from examples/shop with commits signed by
# a fresh SSH key, a real kube-apiserver with Argo CD's and Weft's CRDs, the example profile and
# Application, the controller, and what it recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> building weft"
cargo build --locked --quiet

work=$(mktemp -d -t weft-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "==> creating a signed git repository from examples/shop"
ssh-keygen -q -t ed25519 -N "" -C "release@example.com" -f "$work/signing-key"
git init -q -b main "$work/shop"
cp examples/shop/*.yaml "$work/shop/"
git() { command git -C "$work/shop" -c user.name=Release -c user.email=release@example.com \
  -c gpg.format=ssh -c user.signingkey="$work/signing-key" "$@"; }
git add -A && git commit -q -S -m "shop: cart service"
sed -i 's/replicas: 2/replicas: 3/' "$work/shop/deployment.yaml"
git commit -q -S -am "shop: scale cart to 3"
revision=$(git rev-parse HEAD)
git log --format='   %h %G? %s' | sed 's/ G / signed /'
echo "release@example.com $(cat "$work/signing-key.pub")" > "$work/allowed_signers"

export WEFT_QUICKSTART_DIR=$work WEFT_QUICKSTART_REVISION=$revision
WEFT_TESTENV_COMPONENTS=kube tests/env/testenv.sh run -- bash -c '
  set -euo pipefail
  dir=$WEFT_QUICKSTART_DIR
  kubectl create namespace argocd >/dev/null
  kubectl create configmap shop-signers -n argocd --from-file=allowed_signers="$dir/allowed_signers" >/dev/null
  echo "==> applying examples/profile.yaml and examples/application.yaml"
  kubectl apply --server-side -f examples/profile.yaml
  sed -e "s#REPO_URL#file://$dir/shop#g" -e "s#REVISION#$WEFT_QUICKSTART_REVISION#g" examples/application.yaml \
    | kubectl apply --server-side -f -
  echo "==> running the controller"
  target/debug/weft controller --namespace argocd --cache-dir "$dir/cache" 2> "$dir/controller.log" &
  pid=$!
  trap "kill $pid 2>/dev/null || true" EXIT
  for _ in $(seq 1 150); do
    source=$(kubectl get appprov shop-cart -n argocd -o jsonpath="{.status.conditions[?(@.type==\"SourceVerified\")].status}" 2>/dev/null || true)
    [ -n "$source" ] && break
    sleep 0.2
  done
  sleep 0.5   # let the profile status follow
  echo "==> what Weft recorded"
  kubectl get iprof,appprov -n argocd
  echo
  kubectl get appprov shop-cart -n argocd -o yaml | sed -n "/^status:/,\$p"
  [ -n "$source" ] || { echo "no verdict recorded; controller log:"; cat "$dir/controller.log"; exit 1; }
'

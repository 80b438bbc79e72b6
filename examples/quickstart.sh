#!/usr/bin/env bash
# Weft's main job on embedded defaults: a real kube-apiserver with Argo CD's and Weft's CRDs, the example
# profile and Application from examples/, the controller, and what it recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> building weft"
cargo build --locked --quiet
exec tests/env/cluster.sh run -- bash -c '
  set -euo pipefail
  kubectl create namespace argocd >/dev/null
  echo "==> applying examples/profile.yaml and examples/application.yaml"
  kubectl apply --server-side -f examples/profile.yaml -f examples/application.yaml
  echo "==> running the controller"
  target/debug/weft controller --namespace argocd 2> "$WEFT_TEST_CLUSTER_DIR/controller.log" &
  pid=$!
  trap "kill $pid 2>/dev/null || true; " EXIT
  for _ in $(seq 1 100); do
    verdict=$(kubectl get appprov shop-cart -n argocd -o jsonpath="{.status.verdict}" 2>/dev/null || true)
    [ -n "$verdict" ] && break
    sleep 0.2
  done
  sleep 0.5   # let the profile status follow
  echo "==> what Weft recorded"
  kubectl get iprof,appprov -n argocd -o wide
  echo
  kubectl get appprov shop-cart -n argocd -o yaml | sed -n "/^status:/,\$p"
  [ -n "$verdict" ] || { echo "no verdict recorded; controller log:"; cat "$WEFT_TEST_CLUSTER_DIR/controller.log"; exit 1; }
'

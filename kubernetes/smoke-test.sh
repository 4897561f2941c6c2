#!/usr/bin/env bash
# The integration check after a deploy: the environment's Service answers /status/ready with 200
# (the service is up and reaches its database) and /status/about names a pod; then, when
# PUBLIC_URL is given, the same through the public address Stripe's webhooks use.
#
# Usage: kubernetes/smoke-test.sh <staging|production> [PUBLIC_URL]
# Needs kubectl with the current context on the target cluster, and curl.
set -euo pipefail

die() { echo "smoke-test: $*" >&2; exit 1; }
say() { echo "smoke-test: $*" >&2; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 <staging|production> [PUBLIC_URL]"
env_name=$1
public_url=${2:-}
kubernetes_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
overlay="$kubernetes_dir/overlays/$env_name"
[[ -f $overlay/kustomization.yml ]] || die "no overlay $overlay"
: "${KUBECTL:=kubectl}"
: "${LOCAL_PORT:=18080}"

namespace=$("$KUBECTL" kustomize "$overlay" | sed -n 's/^  namespace: *//p' | sort -u)
[[ -n $namespace && $(wc -l <<<"$namespace") -eq 1 ]] || die "expected one namespace, found: $namespace"

# GET url, expecting 200; prints the body. Retries for a minute: a fresh rollout's endpoints and
# load balancer targets take a moment to settle.
get_ok() {
  local url=$1 body attempt
  for attempt in $(seq 1 30); do
    if body=$(curl --silent --show-error --fail --max-time 5 "$url"); then
      say "GET $url -> 200 $body"
      printf '%s\n' "$body"
      return 0
    fi
    say "GET $url failed (attempt $attempt), retrying"
    sleep 2
  done
  die "GET $url never answered 200"
}

# Through the Kubernetes API: needs no ingress, and proves the Service selects ready pods.
"$KUBECTL" --namespace "$namespace" port-forward service/billing "$LOCAL_PORT:http" >/dev/null &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
get_ok "http://127.0.0.1:$LOCAL_PORT/status/ready" | grep -q '"ready"' || die "unexpected /status/ready body"
get_ok "http://127.0.0.1:$LOCAL_PORT/status/about" | grep -q '"podName"' || die "unexpected /status/about body"

if [[ -n $public_url ]]; then
  get_ok "${public_url%/}/status/ready" | grep -q '"ready"' || die "unexpected public /status/ready body"
else
  say "no PUBLIC_URL given: the public address was not checked"
fi
say "$env_name is ready"

#!/usr/bin/env bash
# Deploys one environment in the order the service needs:
#   1. the configuration: the ConfigMaps, the NetworkPolicies (so that every pod started below is
#      confined from its start) and the ExternalSecret, waiting until the Secret is synced;
#   2. the migration Job (`billing-service migrate`), waiting until it has completed;
#   3. everything else (Deployment, Service, HPA, PDB, CronJob), waiting for the rollout.
# A failed step stops the deploy: pods of a new version never start on an unmigrated database.
#
# Usage:
#   kubernetes/deploy.sh <staging|production> [IMAGE]
#   kubernetes/deploy.sh --render-only <staging|production> [IMAGE]   # print, apply nothing
#
# IMAGE is `registry/repository@sha256:...` (what CI passes) or `registry/repository:tag`; without
# it the overlay's own `images:` entry is used. The Deployment, the migration Job and the CronJob
# all get it. Needs kubectl (kustomize built in) with the current context on the target cluster,
# GNU coreutils, and the External Secrets Operator CRDs in the cluster.
set -euo pipefail

die() { echo "deploy: $*" >&2; exit 1; }
say() { echo "deploy: $*" >&2; }

render_only=false
if [[ ${1:-} == --render-only ]]; then
  render_only=true
  shift
fi
[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 [--render-only] <staging|production> [IMAGE]"
env_name=$1
image=${2:-}

kubernetes_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
overlay="$kubernetes_dir/overlays/$env_name"
[[ -f $overlay/kustomization.yml ]] || die "no overlay $overlay"
: "${KUBECTL:=kubectl}"
: "${MIGRATION_TIMEOUT_SECONDS:=960}" # the Job's own activeDeadlineSeconds is 900
: "${ROLLOUT_TIMEOUT:=300s}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
manifests="$work/manifests.yml"

# Strips a `:tag` (not a registry's `:port`) and an `@digest` from an image reference.
image_name() {
  local ref=${1%@*}
  local last=${ref##*/}
  if [[ $last == *:* ]]; then ref=${ref%:*}; fi
  printf '%s\n' "$ref"
}

if [[ -z $image ]]; then
  "$KUBECTL" kustomize "$overlay" >"$manifests"
else
  # The overlay has already renamed the base's `billing`; a wrapper kustomization renames what
  # the overlay produces, so every workload gets IMAGE (and the overlay stays untouched).
  rendered_images=$("$KUBECTL" kustomize "$overlay" | sed -n 's/^ *image: *//p' | sort -u)
  [[ $(wc -l <<<"$rendered_images") -eq 1 ]] \
    || die "expected one image in $overlay, found: $rendered_images"
  new_name=$(image_name "$image")
  if [[ $image == *@sha256:* ]]; then
    pin="    digest: ${image#*@}"
  elif [[ $image != "$new_name" ]]; then
    pin="    newTag: ${image##*:}"
  else
    die "IMAGE must carry a digest (@sha256:...) or a tag (:...): $image"
  fi
  wrapper="$work/wrapper"
  mkdir "$wrapper"
  cat >"$wrapper/kustomization.yml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$wrapper" "$overlay")
images:
  - name: $(image_name "$rendered_images")
    newName: $new_name
$pin
EOF
  "$KUBECTL" kustomize "$wrapper" >"$manifests"
fi

if $render_only; then
  cat "$manifests"
  exit 0
fi

namespace=$(sed -n 's/^  namespace: *//p' "$manifests" | sort -u)
[[ -n $namespace && $(wc -l <<<"$namespace") -eq 1 ]] || die "expected one namespace, found: $namespace"
kc() { "$KUBECTL" --namespace "$namespace" "$@"; }
say "deploying $env_name to namespace $namespace of context $("$KUBECTL" config current-context)"
grep -E '^ +image: ' "$manifests" | sort -u >&2

say "1/3 configuration"
config=$(kc apply -f "$manifests" --selector app.kubernetes.io/component=config -o name)
echo "$config" >&2
while read -r external_secret; do
  kc wait --for=condition=Ready "$external_secret" --timeout=120s \
    || { kc describe "$external_secret" >&2; die "$external_secret is not synced: is the secret in AWS Secrets Manager with every key?"; }
done < <(grep '^externalsecret' <<<"$config")

say "2/3 migration"
# A Job's pod template cannot change: the previous run (kept for its logs) goes first.
kc delete -f "$manifests" --selector app.kubernetes.io/component=migration --ignore-not-found --wait=true
job=$(kc apply -f "$manifests" --selector app.kubernetes.io/component=migration -o name)
[[ $job == job.batch/* ]] || die "expected one migration Job, got: $job"
deadline=$((SECONDS + MIGRATION_TIMEOUT_SECONDS))
while :; do
  succeeded=$(kc get "$job" -o jsonpath='{.status.succeeded}')
  failed=$(kc get "$job" -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')
  if [[ ${succeeded:-0} -ge 1 ]]; then
    kc logs "$job" --all-containers --tail=200 >&2 || true
    say "$job completed"
    break
  fi
  if [[ $failed == True ]] || ((SECONDS > deadline)); then
    kc logs "$job" --all-containers --tail=200 >&2 || true
    kc describe "$job" >&2 || true
    die "$job did not complete: the rollout was not started"
  fi
  sleep 5
done

say "3/3 rollout"
applied=$(kc apply -f "$manifests" --selector 'app.kubernetes.io/component notin (config,migration)' -o name)
echo "$applied" >&2
while read -r deployment; do
  kc rollout status "$deployment" --timeout="$ROLLOUT_TIMEOUT" \
    || { kc get pods --selector app.kubernetes.io/name=billing >&2 || true; die "$deployment did not become ready"; }
done < <(grep '^deployment' <<<"$applied")
say "$env_name is running $(grep -m1 -E '^ +image: ' "$manifests" | sed 's/^ *image: *//')"

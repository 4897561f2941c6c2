#!/usr/bin/env bash
# Runs billing-service from this checkout on your machine as part of an environment's cluster:
# requests for the environment's Deployment come to your process, which runs with the
# configuration the pods get (their ConfigMaps and Secret). Replaces the template's
# start-dev-env.sh. Never against production.
#
# Usage:
#   kubernetes/dev.sh [--dry-run] [--tool telepresence|mirrord] [--mode intercept|replace|mirror]
#                     [--env-from tool|kubectl] <environment> [-- COMMAND...]
#
#   kubernetes/dev.sh staging                     # Telepresence intercept, `cargo run -p billing-service`
#   kubernetes/dev.sh --tool mirrord staging      # the same with mirrord (--steal)
#   kubernetes/dev.sh --dry-run staging           # print what would run, run nothing
#   kubernetes/dev.sh staging -- cargo run --release -p billing-service
#
# --mode (what happens to the cluster's traffic while your process runs):
#   intercept  (default) requests to the Deployment's `http` port go to your process; the pods keep
#              running, and their webhook workers keep sharing the event queue with yours.
#              Telepresence: `telepresence intercept`; mirrord: `mirrord exec --steal`.
#   replace    Telepresence only (2.22 or newer): `telepresence replace` stops the pods' billing
#              container and puts your process in its place, worker included. (mirrord can do
#              this only with its operator, mirrord for Teams.)
#   mirror     mirrord only: the pods go on answering; your process gets a copy of each request
#              and its answers are dropped.
#
# --env-from (where your process's environment comes from):
#   tool       (default) the tool gives the command the pod's environment: `telepresence
#              intercept|replace ... -- COMMAND` sets it on COMMAND alone, mirrord's `exec` imports
#              it. No file holding the secrets is written.
#   kubectl    read with kubectl from the ConfigMaps and the Secret that the Deployment's
#              `envFrom` names (their data, the Secret's decoded), into a temporary file of mode
#              0600 that is deleted as soon as it is read; never printed. mirrord then adds
#              nothing from the pod (--override-env-vars-exclude '*'). Telepresence still sets
#              the pod's own environment on top, which comes from the same objects.
#
# Either way the command runs with SERVER_HOST=127.0.0.1 (the tools forward to loopback),
# LOG_FORMAT=pretty, and without the pod's POD_NAME. COMMAND runs from the repository's root.
# Beware: `serve` applies this checkout's pending migrations to the environment's database.
#
# Needs kubectl's current context on the environment's cluster, and the tool (and kubectl for
# --env-from kubectl) on PATH; --dry-run needs none of them. Exit status: 2 for a usage error,
# 1 for a refusal or a missing tool, else the tool's.
set -euo pipefail

# The names in kubernetes/base (kubernetes/tests/test_local_dev.py checks them against the
# rendered overlays): the Deployment, its container, and the container and Service port's name.
DEPLOYMENT=billing
CONTAINER=billing
PORT_NAME=http
LOCAL_PORT=8080

# kubectl go-templates: the Deployment's envFrom sources of the container, one `KIND NAME` a line;
# a ConfigMap's data, and a Secret's data base64-decoded, as NUL-terminated KEY=VALUE records
# (a value may hold any character but NUL, which the environment cannot hold either).
ENV_FROM_TEMPLATE='{{range .spec.template.spec.containers}}{{if eq .name "'$CONTAINER'"}}{{range .envFrom}}{{with .configMapRef}}configmap {{.name}}{{"\n"}}{{end}}{{with .secretRef}}secret {{.name}}{{"\n"}}{{end}}{{end}}{{end}}{{end}}'
# shellcheck disable=SC2016 # $k and $v are the template's variables, not the shell's
CONFIGMAP_TEMPLATE='{{range $k, $v := .data}}{{$k}}={{$v}}{{"\x00"}}{{end}}'
# shellcheck disable=SC2016
SECRET_TEMPLATE='{{range $k, $v := .data}}{{$k}}={{$v | base64decode}}{{"\x00"}}{{end}}'

say() { echo "dev: $*" >&2; }
die() { echo "dev: $*" >&2; exit 1; }
usage() {
  cat <<'EOF'
usage: kubernetes/dev.sh [--dry-run] [--tool telepresence|mirrord] [--mode intercept|replace|mirror]
                         [--env-from tool|kubectl] <environment> [-- COMMAND...]
  environment  an overlay under kubernetes/overlays other than production (e.g. staging)
  COMMAND      what runs locally (default: cargo run -p billing-service)
See the comment at the top of kubernetes/dev.sh.
EOF
}
bad_usage() {
  echo "dev: $*" >&2
  usage >&2
  exit 2
}

dry_run=false
tool=telepresence
mode=intercept
env_from=tool
env_name=
command=()
while (($# > 0)); do
  case $1 in
    --dry-run) dry_run=true ;;
    --tool | --mode | --env-from)
      [[ $# -ge 2 && $2 != -* ]] || bad_usage "$1 needs a value"
      case $1 in
        --tool) tool=$2 ;;
        --mode) mode=$2 ;;
        --env-from) env_from=$2 ;;
      esac
      shift
      ;;
    --tool=*) tool=${1#*=} ;;
    --mode=*) mode=${1#*=} ;;
    --env-from=*) env_from=${1#*=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      command=("$@")
      break
      ;;
    -*) bad_usage "unknown option: $1" ;;
    *)
      [[ -z $env_name ]] || bad_usage "one environment only (got '$env_name' and '$1')"
      env_name=$1
      ;;
  esac
  shift
done

[[ -n $env_name ]] || bad_usage "which environment?"
case $tool in telepresence | mirrord) ;; *) bad_usage "--tool is telepresence or mirrord, not '$tool'" ;; esac
case $mode in intercept | replace | mirror) ;; *) bad_usage "--mode is intercept, replace or mirror, not '$mode'" ;; esac
case $env_from in tool | kubectl) ;; *) bad_usage "--env-from is tool or kubectl, not '$env_from'" ;; esac
if [[ $tool == mirrord && $mode == replace ]]; then
  bad_usage "mirrord replaces a workload only with its operator: use --tool telepresence --mode replace, or --mode intercept (--steal)"
fi
if [[ $tool == telepresence && $mode == mirror ]]; then
  bad_usage "--mode mirror is mirrord's: use --tool mirrord --mode mirror"
fi
((${#command[@]} > 0)) || command=(cargo run -p billing-service)

# Production's data, money and customers are never a development environment.
case $env_name in
  production | prod | live) die "refusing to run against $env_name: use staging (kubernetes/dev.sh staging)" ;;
esac
[[ $env_name =~ ^[a-z0-9][a-z0-9-]*$ ]] || bad_usage "not an environment name: '$env_name'"
kubernetes_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
overlay=$kubernetes_dir/overlays/$env_name
if [[ ! -f $overlay/kustomization.yml ]]; then
  known=()
  for dir in "$kubernetes_dir"/overlays/*/; do
    dir=${dir%/}
    [[ ${dir##*/} == production ]] || known+=("${dir##*/}")
  done
  bad_usage "no overlay $overlay (environments: ${known[*]})"
fi
namespace=$(sed -n 's/^namespace: *//p' "$overlay/kustomization.yml")
[[ -n $namespace ]] || die "$overlay/kustomization.yml sets no namespace"
[[ $namespace != *production* ]] || die "refusing to run against namespace $namespace"
cd "$kubernetes_dir/.."

# What runs locally: the command, with the settings that differ on a laptop.
local_command=(env -u POD_NAME SERVER_HOST=127.0.0.1 LOG_FORMAT=pretty "${command[@]}")

# Prints a command as it would be typed (quoted where the shell needs it).
show() {
  local arg out=+
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=" $arg"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "$out"
}
run() {
  if $dry_run; then
    show "$@"
  else
    show "$@" >&2
    "$@"
  fi
}
need() {
  $dry_run || command -v "$1" >/dev/null || die "$1 is not installed (or not on PATH): $2"
}

case $tool in
  telepresence) need telepresence "see https://telepresence.io/docs/install/client" ;;
  mirrord) need mirrord "see https://metalbear.com/mirrord/docs/overview/quick-start/" ;;
esac
[[ $env_from == tool ]] || need kubectl "see https://kubernetes.io/docs/tasks/tools/"
need "${command[0]}" "the command to run locally"

# --env-from kubectl: the values the Deployment's envFrom names, exported into this script's
# environment, which the tool passes on to the command. The file is deleted once read.
load_cluster_env() {
  local kc=(kubectl --namespace "$namespace")
  if $dry_run; then
    show "${kc[@]}" get deployment "$DEPLOYMENT" -o "go-template=$ENV_FROM_TEMPLATE"
    show "${kc[@]}" get configmap "<each configMapRef above>" -o "go-template=$CONFIGMAP_TEMPLATE"
    show "${kc[@]}" get secret "<each secretRef above>" -o "go-template=$SECRET_TEMPLATE"
    echo "  (into a temporary file of mode 0600, exported for the command below, then deleted; values never printed)"
    return
  fi
  local work file sources kind name entry key count=0
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local to this function
  trap "rm -rf '$work'" EXIT
  file=$work/cluster.env
  (umask 077 && : >"$file")
  say "reading deployment/$DEPLOYMENT's ConfigMaps and Secret in $namespace (context $(kubectl config current-context))"
  sources=$("${kc[@]}" get deployment "$DEPLOYMENT" -o "go-template=$ENV_FROM_TEMPLATE")
  [[ -n $sources ]] || die "deployment/$DEPLOYMENT in $namespace reads no ConfigMap or Secret"
  while read -r kind name; do
    case $kind in
      configmap) "${kc[@]}" get configmap "$name" -o "go-template=$CONFIGMAP_TEMPLATE" >>"$file" ;;
      secret) "${kc[@]}" get secret "$name" -o "go-template=$SECRET_TEMPLATE" >>"$file" ;;
    esac
    say "  $kind/$name"
  done <<<"$sources"
  # Later sources win, as in the pod (Kubernetes gives the last envFrom source precedence).
  while IFS= read -r -d '' entry; do
    key=${entry%%=*}
    case $key in
      PATH | HOME | KUBECONFIG) say "  not taking $key from the cluster" ;;
      *)
        if [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ && $entry == *=* ]]; then
          export "${entry?}"
          count=$((count + 1))
        else
          say "  skipping '$key': not a variable name"
        fi
        ;;
    esac
  done <"$file"
  rm -rf "$work"
  say "  $count variables (values not shown)"
}

case $mode in
  intercept) say "requests to deployment/$DEPLOYMENT ($namespace) go to this machine while the command runs; the pods keep running" ;;
  replace) say "deployment/$DEPLOYMENT's $CONTAINER container ($namespace) is replaced by this machine's command while it runs" ;;
  mirror) say "this machine's command gets a copy of deployment/$DEPLOYMENT's requests ($namespace); its answers are dropped" ;;
esac
say "note: \`serve\` applies this checkout's pending migrations to $env_name's database"

case $tool in
  telepresence)
    # --mount=false: the pod's volumes (an emptyDir /tmp) are not needed, nor FUSE for them.
    # With a command after --, Telepresence sets the pod's environment on it and ends the
    # intercept (or the replace) when it exits.
    run telepresence connect --namespace "$namespace"
    # After connecting: the daemons that `connect` starts outlive this script, and never get
    # the values in their environment.
    [[ $env_from == tool ]] || load_cluster_env
    case $mode in
      intercept)
        run telepresence intercept "$DEPLOYMENT" --port "$LOCAL_PORT:$PORT_NAME" --mount=false \
          -- "${local_command[@]}"
        ;;
      replace)
        run telepresence replace "$DEPLOYMENT" --container "$CONTAINER" --port "$LOCAL_PORT:$PORT_NAME" \
          --mount=false -- "${local_command[@]}"
        ;;
    esac
    ;;
  mirrord)
    mirrord_args=(mirrord exec --target "deployment/$DEPLOYMENT/container/$CONTAINER" --target-namespace "$namespace")
    [[ $mode == mirror ]] || mirrord_args+=(--steal)
    if [[ $env_from == kubectl ]]; then
      load_cluster_env
      mirrord_args+=(--override-env-vars-exclude '*')
    else
      # Not imported from the pod, so that the local values below hold.
      mirrord_args+=(--override-env-vars-exclude 'POD_NAME;SERVER_HOST;LOG_FORMAT')
    fi
    run "${mirrord_args[@]}" -- "${local_command[@]}"
    ;;
esac

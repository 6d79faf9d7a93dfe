#!/usr/bin/env bash
# Deploy time of the same component uploaded by `limes deploy FILE` against pulled by the node
# from a registry on loopback (`limes deploy NAME oci://…`), interleaved, N rounds each; prints
# each deploy's wall time and the medians and p90 of both. A fresh name each round; the AOT
# cache is keyed by content, so only the first deploy compiles and the others measure the
# transfer, the checks and the store.
# Usage: docs/results/registry/measure.sh LIMES COMPONENT [ROUNDS]
set -euo pipefail
limes=$1 component=$2 rounds=${3:-15}
work=$(mktemp -d)
registry=127.0.0.1:5077 port=7977
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' "$work/registry" "$registry" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
"$limes" serve --listen 127.0.0.1:$port --data-dir "$work/node" --auth none --registry-insecure "$registry" 2>/dev/null &
node_pid=$!
trap 'kill $node_pid $registry_pid; wait; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && curl -sf "http://$registry/v2/" >/dev/null && break; sleep 0.1; done
"$limes" push "$component" "oci://$registry/measure/component:v1" --registry-insecure "$registry" >/dev/null
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
up=() pull=()
for i in $(seq "$rounds"); do
  up+=("$(ms "$limes" deploy --node http://127.0.0.1:$port "up$i" "$component")")
  pull+=("$(ms "$limes" deploy --node http://127.0.0.1:$port "pull$i" "oci://$registry/measure/component:v1")")
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %d ms, p90 %d ms, min %d ms", a[int((NR+1)/2)], a[int(NR*0.9+0.5)], a[1]}'; }
echo "component: $(basename "$component") ($(stat -c %s "$component") bytes), $rounds rounds, interleaved"
echo "upload:     ${up[*]}"
echo "registry:   ${pull[*]}"
echo "upload   $(stats "${up[@]}")"
echo "registry $(stats "${pull[@]}")"

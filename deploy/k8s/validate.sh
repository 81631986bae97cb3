#!/usr/bin/env bash
# Validates Kubernetes manifests against the API's schemas, offline:
# kubernetes-validate (PyPI) bundles the schemas of every Kubernetes
# release. Strict: an unknown field is an error, as `kubectl apply
# --validate=strict` would say. Installs it into target/k8s-venv the first
# time (a package registry is the only network it needs, and only then).
#
#   deploy/k8s/validate.sh [FILE...]     (default: deploy/k8s/*.yaml)
#
# XLB_K8S_VERSION: the Kubernetes release to check against (default 1.31.0,
# what K3s's stable channel ran when these were written).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/k8s-venv
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
(($#)) || set -- deploy/k8s/*.yaml
"$venv/bin/kubernetes-validate" --strict --no-warn -k "${XLB_K8S_VERSION:-1.31.0}" "$@"

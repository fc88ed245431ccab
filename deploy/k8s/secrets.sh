#!/usr/bin/env bash
# Prints the Secrets a rideshare namespace needs, with new random values,
# for staging and production, whose Secrets never live in this repository:
#
#   bash deploy/k8s/secrets.sh rideshare-prod | kubectl create -f -
#
# `kubectl create` (not apply) refuses to overwrite Secrets that exist: run
# it once per environment. It prints, for namespace NAMESPACE:
#   rideshare-identity     the master secret every service secret derives
#                          from, and the operator client's secret
#   rideshare-NAME         each other service's own secret, derived as
#                          identity checks it: base64url(HMAC-SHA256(master,
#                          "service-NAME")), unpadded
#   rideshare-db-NAME      each database role's password (CloudNativePG
#                          sets the role's password from it)
#   rideshare-nats         the broker user the services connect as
# and, for namespace nats, nats-auth: the same broker password, which the
# NATS chart reads (deploy/k8s/nats-values.yaml). Every environment has its
# own NATS, so apply that one to the NATS of this environment's cluster.
#
# Needs bash, openssl and base64; talks to no cluster.
set -euo pipefail

if [[ $# -ne 1 || -z $1 ]]; then
	echo "usage: $0 NAMESPACE" >&2
	exit 2
fi
ns=$1
services=(users rides dispatch payments pricing notifications gateway)
databases=(identity users rides dispatch payments pricing notifications)

# Random secrets are hex: safe in URLs, environment variables and config.
random() { openssl rand -hex 32; }
b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
derive() {
	printf 'service-%s' "$2" | openssl dgst -sha256 -hmac "$1" -binary | base64 | tr '+/' '-_' | tr -d '=\n'
}

# secret NAME NAMESPACE TYPE [KEY VALUE]... prints one Secret.
secret() {
	local name=$1 namespace=$2 type=$3
	shift 3
	printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$namespace"
	if [[ $name == rideshare-db-* ]]; then
		printf '  labels:\n    cnpg.io/reload: "true"\n'
	fi
	printf 'type: %s\ndata:\n' "$type"
	while [[ $# -gt 0 ]]; do
		printf '  %s: %s\n' "$1" "$(b64 "$2")"
		shift 2
	done
}

master=$(random)
secret rideshare-identity "$ns" Opaque \
	RIDESHARE_SERVICE_MASTER_SECRET "$master" \
	RIDESHARE_OPERATOR_CLIENT_SECRET "$(random)"
for s in "${services[@]}"; do
	secret "rideshare-$s" "$ns" Opaque RIDESHARE_SERVICE_SECRET "$(derive "$master" "$s")"
done
for d in "${databases[@]}"; do
	secret "rideshare-db-$d" "$ns" kubernetes.io/basic-auth username "$d" password "$(random)"
done
nats=$(random)
secret rideshare-nats "$ns" Opaque RIDESHARE_NATS_USER rideshare RIDESHARE_NATS_PASSWORD "$nats"
secret nats-auth nats Opaque rideshare-password "$nats"

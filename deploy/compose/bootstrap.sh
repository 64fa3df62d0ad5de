#!/bin/sh
# tunnel-compose-bootstrap: the two one-shot jobs of docker-compose.yml,
# doing what an operator does by hand (docs/OPERATOR.md).
#
#   tunnel-compose-bootstrap init    create the cluster in the store, once:
#                                    KEK, admin password and TOTP secret in
#                                    $TUNNEL_CLUSTER_DIR, the CA pin in
#                                    $TUNNEL_ENROLMENT_DIR/ca-pin
#   tunnel-compose-bootstrap enrol   log in as the admin, create a join token
#                                    per agent in $TUNNEL_ENROLMENT_DIR/tokens/
#                                    and allow the app agent's streams
#   tunnel-compose-bootstrap totp SECRET   print the current TOTP code
#
# Both do nothing when their work is already done, so `docker compose up`
# can run them again. A demo only: a real cluster's admin logs in with an
# authenticator app, and no machine keeps the TOTP secret.
set -eu
umask 077

CLUSTER_DIR=${TUNNEL_CLUSTER_DIR:-/var/lib/tunnel-cluster}
ENROL_DIR=${TUNNEL_ENROLMENT_DIR:-/var/lib/tunnel-enrolment}

say() { echo "tunnel-compose-bootstrap: $*" >&2; }

# totp SECRET prints the current code of a base32 TOTP secret (RFC 6238:
# HMAC-SHA-1, 30 s steps, 6 digits) with openssl and awk alone.
totp() {
	key=$(printf '%s' "$1" | tr -d '= \n' | tr 'a-z' 'A-Z' | awk '
		BEGIN { a = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" }
		{
			bits = ""
			for (i = 1; i <= length($0); i++) {
				v = index(a, substr($0, i, 1)) - 1
				if (v < 0) exit 1
				for (b = 16; b >= 1; b /= 2) bits = bits (int(v / b) % 2)
			}
			for (i = 1; i + 7 <= length(bits); i += 8) {
				n = 0
				for (j = 0; j < 8; j++) n = n * 2 + substr(bits, i + j, 1)
				printf "%02x", n
			}
		}')
	[ -n "$key" ] || { say "the TOTP secret is not base32"; return 1; }
	step=$(( $(date +%s) / 30 ))
	msg=$(awk -v s="$step" 'BEGIN { for (i = 7; i >= 0; i--) printf "\\%03o", int(s / 256 ^ i) % 256 }')
	# shellcheck disable=SC2059 # msg is the 8 octal escapes of the counter
	mac=$(printf "$msg" | openssl dgst -sha1 -mac HMAC -macopt "hexkey:$key" | awk '{ print $NF }')
	printf '%s\n' "$mac" | awk '
		function hex(s,   i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return n }
		{
			off = hex(substr($0, 40, 1))
			n = hex(substr($0, off * 2 + 1, 8))
			if (n >= 2147483648) n -= 2147483648
			printf "%06d\n", n % 1000000
		}'
}

init() {
	if [ -s "$ENROL_DIR/ca-pin" ]; then
		say "the cluster exists (CA pin $(cat "$ENROL_DIR/ca-pin")); nothing to do"
		return 0
	fi
	[ -s "$CLUSTER_DIR/admin.pw" ] || openssl rand -hex 16 >"$CLUSTER_DIR/admin.pw"
	# The store's URL holds its password: read from the secret file, never
	# written in the compose file.
	tunnel-gateway init --data-dir "$CLUSTER_DIR/init" --kek-file "$CLUSTER_DIR/kek" \
		--cluster "${TUNNEL_CLUSTER:-demo}" --store "$(cat "$TUNNEL_GATEWAY_STORE_FILE")" --store-insecure \
		--admin admin --admin-password-file "$CLUSTER_DIR/admin.pw" --json >"$CLUSTER_DIR/init.json"
	jq -r .admin.secret "$CLUSTER_DIR/init.json" >"$CLUSTER_DIR/admin.totp"
	mkdir -p "$ENROL_DIR/tokens"
	chmod 0755 "$ENROL_DIR" "$ENROL_DIR/tokens"
	jq -r .ca_pin "$CLUSTER_DIR/init.json" >"$ENROL_DIR/ca-pin.tmp"
	chmod 0644 "$ENROL_DIR/ca-pin.tmp"
	mv "$ENROL_DIR/ca-pin.tmp" "$ENROL_DIR/ca-pin"
	say "created cluster ${TUNNEL_CLUSTER:-demo}, CA pin $(cat "$ENROL_DIR/ca-pin"); the admin's password and TOTP secret are in $CLUSTER_DIR"
}

enrol() {
	agents=${TUNNEL_AGENTS:?set TUNNEL_AGENTS (names of the agents to enrol)}
	missing=
	for a in $agents; do [ -s "$ENROL_DIR/tokens/$a" ] || missing="$missing $a"; done
	if [ -z "$missing" ]; then
		say "every agent has its join token; nothing to do"
		return 0
	fi
	TUNNEL_HOME=$(mktemp -d)
	export TUNNEL_HOME
	trap 'rm -rf "$TUNNEL_HOME"' EXIT
	tunnel login --gateway "${TUNNEL_GATEWAYS:?set TUNNEL_GATEWAYS}" --ca-pin "$(cat "$ENROL_DIR/ca-pin")" \
		--user admin --password-file "$CLUSTER_DIR/admin.pw" --otp "$(totp "$(cat "$CLUSTER_DIR/admin.totp")")" >&2
	for a in $missing; do
		tunnel admin tokens create --agent "$a" --ttl 1h --json | jq -r .token >"$ENROL_DIR/tokens/$a.tmp"
		chmod 0644 "$ENROL_DIR/tokens/$a.tmp"
		mv "$ENROL_DIR/tokens/$a.tmp" "$ENROL_DIR/tokens/$a"
		say "join token for $a in $ENROL_DIR/tokens/$a"
	done
	# TUNNEL_ALLOW: "FROM=NODE/SERVICE ...", one policy rule each.
	for rule in ${TUNNEL_ALLOW:-}; do
		tunnel admin policy allow --from "${rule%%=*}" --to "${rule#*=}" >&2
	done
}

case "${1:-}" in
init) init ;;
enrol) enrol ;;
totp) totp "$2" ;;
*)
	echo "usage: tunnel-compose-bootstrap init|enrol|totp SECRET" >&2
	exit 2
	;;
esac

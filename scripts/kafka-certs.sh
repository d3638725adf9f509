#!/usr/bin/env bash
# make kafka-certs: what the secured Kafka broker of make kafka-secure and its
# clients need, for local use only, in .kafka/secure/ (not committed):
#
#   ca.pem, ca.key            a CA made here (ECDSA P-256, 825 days)
#   broker.pem                the broker's key (PKCS#8) and certificate, signed
#                             by the CA, for 127.0.0.1, ::1 and localhost
#   admin.password            the superuser's password (SASL PLAIN)
#   order.password, customer.password, projector.password
#                             each service's SCRAM-SHA-512 password
#   admin.env, order.env, customer.env, projector.env
#                             KAFKA_BROKERS, KAFKA_SASL_MECHANISM, KAFKA_USERNAME,
#                             KAFKA_PASSWORD, KAFKA_TLS_CA: a client's settings
#                             (env $(cat .kafka/secure/order.env) bin/order)
#
# What exists is kept; remove .kafka/secure/ (and the broker's data,
# .kafka/data/secure-node-1/, whose SCRAM users have the old passwords) to
# start over. Everything is readable by its owner only.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${KAFKA_SECURE_DIR:-$PWD/.kafka/secure}
brokers=${KAFKA_SECURE_BROKERS:-127.0.0.1:9192}
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
say() { echo "kafka-certs: $*" >&2; }

command -v openssl >/dev/null || {
	[ "$(id -u)" = 0 ] || { say "openssl is missing (Debian's package openssl); install it first"; exit 1; }
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q openssl >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q openssl >/dev/null; }
}

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 825 -subj "/CN=eventsaga local Kafka CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$dir/ca.pem"
	rm -f "$dir/broker.pem" # signed by a CA that is gone
	say "made a CA: $dir/ca.pem"
fi

if [ ! -s "$dir/broker.pem" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/broker.key" 2>/dev/null
	openssl req -new -key "$tmp/broker.key" -subj "/CN=localhost" -out "$tmp/broker.csr"
	printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" >"$tmp/ext"
	openssl x509 -req -in "$tmp/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
		-days 825 -sha256 -extfile "$tmp/ext" -out "$tmp/broker.crt" 2>/dev/null
	rm -f "$dir/ca.srl"
	# Kafka's PEM key store: the unencrypted PKCS#8 key, then the chain.
	openssl pkcs8 -topk8 -nocrypt -in "$tmp/broker.key" >"$dir/broker.pem"
	cat "$tmp/broker.crt" >>"$dir/broker.pem"
	say "made the broker's certificate: $dir/broker.pem"
fi

for user in admin order customer projector; do
	[ -s "$dir/$user.password" ] || openssl rand -hex 24 >"$dir/$user.password"
	mechanism=SCRAM-SHA-512
	[ "$user" = admin ] && mechanism=PLAIN
	cat >"$dir/$user.env" <<EOF
KAFKA_BROKERS=$brokers
KAFKA_SASL_MECHANISM=$mechanism
KAFKA_USERNAME=$user
KAFKA_PASSWORD=$(cat "$dir/$user.password")
KAFKA_TLS_CA=$dir/ca.pem
EOF
done

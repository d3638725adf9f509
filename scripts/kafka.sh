#!/usr/bin/env bash
# Real Apache Kafka (KRaft: no ZooKeeper) on this machine, as plain JVM
# processes in the foreground: one node, or a cluster of three. Ctrl-C (or
# SIGTERM) stops the nodes cleanly.
#
#   scripts/kafka.sh         one node       (make kafka)
#   scripts/kafka.sh 3       three nodes    (make kafka-cluster)
#   scripts/kafka.sh secure  one node that takes TLS and SASL only and
#                            authorizes with ACLs (make kafka-secure)
#
# Ports, all on 127.0.0.1 (fixed; both layouts can run at the same time):
#   one node:     broker 9092                controller 9093
#   three nodes:  brokers 19092, 19093, 19094  controllers 19192, 19193, 19194
#   secure:       broker 9192 (SASL_SSL)       controller 9193 (SASL_SSL)
# Once every broker answers, it prints the bootstrap address(es):
#   KAFKA_BROKERS=127.0.0.1:9092
#   KAFKA_BROKERS=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
#
# Each node is broker and controller at once (process.roles=broker,controller);
# the three nodes form one controller quorum of three (controller.quorum.voters).
# Topics are never created by a producer (auto.create.topics.enable=false);
# num.partitions=12; the internal topics (consumer offsets, transactions, share
# groups) are replicated min(3, nodes) times, and so are topics created without
# a replication factor.
#
# The Kafka version is pinned in deploy/kafka/pom.xml. The first start fetches
# the jars with Maven (Maven Central) into .kafka/lib/; later starts use them
# as they are, without Maven, until the pom changes. Everything lives in
# .kafka/ (not committed), kept across restarts:
#   .kafka/lib/                 the jars (java -cp '.kafka/lib/*' kafka.Kafka ...)
#   .kafka/cluster-id           the cluster id the data folders are formatted with
#   .kafka/data/NODE/           a node's data (log.dirs); formatted on its first start only
#   .kafka/logs/NODE/           its logs: server.log, controller.log,
#                               state-change.log, gc.log, stdout.log (JVM output)
#   .kafka/config/NODE.properties, .kafka/config/log4j2.xml   written at each start
#   .kafka/run/NODE.pid         the JVM's pid while it runs
# where NODE is node-1 for the single node and cluster-node-1..3 for the
# cluster: separate folders, since the single node's metadata log belongs to a
# quorum of one. Remove .kafka/data/ (with the nodes stopped) to start empty.
#
# KAFKA_DATA_DIR puts everything but the jars (cluster-id, data, logs,
# config, run) in another folder: the chaos check runs a cluster of its own
# there, started empty and removed afterwards.
#
# SIGUSR1 restarts the nodes that have exited (a node killed on purpose, as
# the chaos check does), with their data as it was.
#
# The secure node: both listeners SASL_SSL with the certificate of make
# kafka-certs (scripts/kafka-certs.sh, run here if need be; .kafka/secure/);
# the client listener takes SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, the
# controller listener PLAIN; the StandardAuthorizer, with User:admin (PLAIN,
# its password in .kafka/secure/admin.password) the only superuser and no
# access where no ACL allows it. Once it is up, bin/kafkagrant (KAFKA_GRANT;
# make kafka-secure builds it) makes the services' SCRAM users, their topics
# and their ACLs; then the script prints KAFKA_BROKERS and where each
# service's settings are (.kafka/secure/<service>.env).
#
# Heaps: -Xms512m -Xmx512m for the single node, -Xms384m -Xmx384m for each of
# the three; KAFKA_HEAP_OPTS overrides it, KAFKA_OPTS adds JVM options.
# KAFKA_START_TIMEOUT (s, default 180): how long the brokers may take to answer.
# KAFKA_STOP_TIMEOUT (s, default 60): how long a node may take to stop after
# SIGTERM before it gets SIGKILL.
#
# A JVM does not outlive this script: it is started with a parent-death signal
# (setpriv --pdeathsig TERM), so even a script killed with SIGKILL leaves no
# broker behind; a node still running from an earlier start whose script is
# gone (its pid file says so) is stopped before the new start.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() { echo "usage: scripts/kafka.sh [1|3|secure]   (1: one node on 127.0.0.1:9092; 3: three nodes on 127.0.0.1:19092-19094; secure: one SASL_SSL node on 127.0.0.1:9192)" >&2; }
nodes=${1:-1}
mode=$nodes # 1, 3 or secure: what the lock and messages name
secure=""
case $nodes in
1 | 3) ;;
secure) secure=1 ;;
-h | --help) usage; exit 0 ;;
*) usage; exit 2 ;;
esac

# Messages go to fd 7, a copy of stderr: once the nodes run, the script's own
# stderr is /dev/null, which hides bash's "line N: PID Killed java ..." notice
# for a JVM killed by a signal (it is reported below, as an exit status).
exec 7>&2
say() { echo "kafka: $*" >&7; }
die() { say "$*"; exit 1; }

home=${KAFKA_DATA_DIR:-$root/.kafka}
home=$(mkdir -p "$home" && cd "$home" && pwd)
lib=$root/.kafka/lib
pom=$root/deploy/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
start_timeout=${KAFKA_START_TIMEOUT:-180}
stop_timeout=${KAFKA_STOP_TIMEOUT:-60}

if [ -n "$secure" ]; then
	nodes=1
	names=(secure-node-1)
	broker_ports=(9192)
	controller_ports=(9193)
	heap=${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}
	secure_dir=${KAFKA_SECURE_DIR:-$home/secure}
	grant=${KAFKA_GRANT:-$root/bin/kafkagrant}
elif [ "$nodes" = 1 ]; then
	names=(node-1)
	broker_ports=(9092)
	controller_ports=(9093)
	heap=${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}
else
	names=(cluster-node-1 cluster-node-2 cluster-node-3)
	broker_ports=(19092 19093 19094)
	controller_ports=(19192 19193 19194)
	heap=${KAFKA_HEAP_OPTS:--Xms384m -Xmx384m}
fi
replication=$((nodes < 3 ? nodes : 3))
min_isr=$((replication < 2 ? 1 : 2))

# --- Java and Maven ----------------------------------------------------------

# Kafka 4.x needs Java 17 or newer; Maven only for the first start. On a
# machine without them, Debian's packages are installed (as root).
tools() {
	local missing=()
	command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
	if ! command -v mvn >/dev/null && ! lib_complete; then missing+=(maven); fi
	[ ${#missing[@]} = 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing: ${missing[*]} (Debian's packages); install them first"
	say "installing ${missing[*]} (Debian's packages)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

java_major() { java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p'; }

# The jars are complete when .kafka/lib/.complete holds the pom's checksum:
# written last, after Maven copied every jar.
pom_sum() { sha256sum "$pom" | cut -d' ' -f1; }
lib_complete() { [ -f "$lib/.complete" ] && [ "$(cat "$lib/.complete")" = "$(pom_sum)" ]; }

fetch_jars() {
	lib_complete && return 0
	mkdir -p "$home"
	# One fetch at a time (make kafka and make kafka-cluster may start together).
	exec 8>"$home/.lib.lock"
	flock 8
	if ! lib_complete; then
		say "fetching Kafka $version and its dependencies with Maven into .kafka/lib/ (first use)"
		local tmp=$home/lib.tmp.$$ t0=$SECONDS
		rm -rf "$tmp"
		# Maven's output only if it fails (with -q it still prints colour codes).
		if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
			sed 's/\x1b\[[0-9;]*m//g' "$tmp.log" >&2
			rm -rf "$tmp" "$tmp.log"
			die "Maven could not fetch the jars (see above)"
		fi
		rm -f "$tmp.log"
		[ -f "$tmp/kafka_2.13-$version.jar" ] || { rm -rf "$tmp"; die "kafka_2.13-$version.jar is missing after Maven's copy"; }
		pom_sum >"$tmp/.complete"
		rm -rf "$lib"
		mv "$tmp" "$lib"
		say "fetched $(find "$lib" -name '*.jar' | wc -l) jars ($(du -sh "$lib" | cut -f1)) in $((SECONDS - t0)) s"
	fi
	exec 8>&-
}

# --- the nodes ---------------------------------------------------------------

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A broker is up when it answers an ApiVersions request (v0, correlation id
# 1) with error code 0: the response starts with its size (4 bytes), the
# correlation id (4) and the error code (2).
broker_answers() {
	local resp
	resp=$(timeout 3 bash -c '
		exec 3<>/dev/tcp/127.0.0.1/'"$1"' || exit 1
		printf "\x00\x00\x00\x12\x00\x12\x00\x00\x00\x00\x00\x01\x00\x08kafka.sh" >&3
		head -c 10 <&3' 2>/dev/null | od -An -tx1 | tr -d ' \n') || return 1
	[ "${resp:8:12}" = 000000010000 ]
}

# The pid in a node's pid file if that process is still its JVM.
node_pid() {
	local f=$home/run/$1.pid pid
	[ -f "$f" ] || return 1
	pid=$(cat "$f")
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $home/config/$1.properties" || return 1
	echo "$pid"
}

# Stops JVMs: SIGTERM to each (a clean shutdown: the broker leaves the
# cluster, the logs are flushed), then SIGKILL to those still running after
# $stop_timeout seconds.
stop_pids() {
	local pid left deadline=$((SECONDS + stop_timeout))
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	while :; do
		left=()
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
		[ ${#left[@]} = 0 ] && return 0
		if [ $SECONDS -ge $deadline ]; then
			say "still running after ${stop_timeout} s: ${left[*]}; SIGKILL"
			kill -KILL "${left[@]}" 2>/dev/null || true
			return 0
		fi
		sleep 0.2
	done
}

# A node's server.properties. The secure node's holds the admin's
# password: every one is readable by its owner only.
write_config() {
	local i=$1 name=${names[$1]} voters="" j
	for j in "${!names[@]}"; do voters+="${voters:+,}$((j + 1))@127.0.0.1:${controller_ports[$j]}"; done
	(
		umask 077
		{
			cat <<EOF
# Written by scripts/kafka.sh at each start: edit the script, not this file.
process.roles=broker,controller
node.id=$((i + 1))
controller.quorum.voters=$voters
EOF
			if [ -n "$secure" ]; then secure_listeners "$i"; else plain_listeners "$i"; fi
			cat <<EOF
log.dirs=$home/data/$name
auto.create.topics.enable=false
num.partitions=12
default.replication.factor=$replication
offsets.topic.replication.factor=$replication
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
EOF
		} >"$home/config/$name.properties"
	)
}

plain_listeners() {
	cat <<EOF
listeners=PLAINTEXT://127.0.0.1:${broker_ports[$1]},CONTROLLER://127.0.0.1:${controller_ports[$1]}
advertised.listeners=PLAINTEXT://127.0.0.1:${broker_ports[$1]}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
EOF
}

# SASL_SSL on both listeners; PLAIN (the admin) between broker and
# controller; SCRAM and PLAIN for clients; nothing without an ACL.
secure_listeners() {
	local pw plain
	pw=$(cat "$secure_dir/admin.password")
	plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$pw\" user_admin=\"$pw\";"
	cat <<EOF
listeners=SASL_SSL://127.0.0.1:${broker_ports[$1]},CONTROLLER://127.0.0.1:${controller_ports[$1]}
advertised.listeners=SASL_SSL://127.0.0.1:${broker_ports[$1]}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
ssl.keystore.type=PEM
ssl.keystore.location=$secure_dir/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$secure_dir/ca.pem
ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=$plain
listener.name.sasl_ssl.plain.sasl.jaas.config=$plain
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
EOF
}

write_log4j2() {
	local appenders="" n
	for n in server controller state-change; do
		appenders+="
    <RollingFile name=\"$n\" fileName=\"\${sys:kafka.logs.dir}/$n.log\" filePattern=\"\${sys:kafka.logs.dir}/$n.log.%i\">
      <PatternLayout pattern=\"[%d] %p %m (%c)%n\"/>
      <SizeBasedTriggeringPolicy size=\"100 MB\"/>
      <DefaultRolloverStrategy max=\"4\"/>
    </RollingFile>"
	done
	cat >"$home/config/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh at each start. The node's log folder is the
     system property kafka.logs.dir. No shutdown hook of its own:
     the broker logs its shutdown to the end. -->
<Configuration status="warn" shutdownHook="disable">
  <Appenders>$appenders
  </Appenders>
  <Loggers>
    <Root level="info"><AppenderRef ref="server"/></Root>
    <Logger name="org.apache.kafka.controller" level="info" additivity="false"><AppenderRef ref="controller"/></Logger>
    <Logger name="state.change.logger" level="info" additivity="false"><AppenderRef ref="state-change"/></Logger>
    <Logger name="kafka.request.logger" level="warn"/>
  </Loggers>
</Configuration>
EOF
}

cluster_id() {
	local f=$home/cluster-id id="" name
	if [ -s "$f" ]; then cat "$f"; return; fi
	# A cluster id lost while data remains: keep the one the data has.
	for name in "${names[@]}"; do
		[ -f "$home/data/$name/meta.properties" ] &&
			id=$(sed -n 's/^cluster.id=//p' "$home/data/$name/meta.properties") && [ -n "$id" ] && break
	done
	[ -n "$id" ] || id=$(java -cp "$lib/*" kafka.tools.StorageTool random-uuid)
	echo "$id" >"$f"
	echo "$id"
}

# --- start -------------------------------------------------------------------

tools
if [ -n "$secure" ]; then
	[ -x "$grant" ] || die "$grant is missing: make kafka-secure builds it (or set KAFKA_GRANT)"
	KAFKA_SECURE_DIR=$secure_dir scripts/kafka-certs.sh || die "could not make the certificates"
fi
[ "$(java_major)" -ge 17 ] 2>/dev/null || die "Kafka $version needs Java 17 or newer; java is $(java_major)"
fetch_jars
mkdir -p "$home/config" "$home/run" "$home/data"

# One script per layout at a time; the lock is not passed to the JVMs (9>&-).
exec 9>"$home/run/kafka-$mode.lock"
flock -n 9 || die "scripts/kafka.sh $mode is already running (.kafka/run/kafka-$mode.lock); stop it first"

# Nodes of an earlier start whose script is gone: stop them.
leftover=()
for name in "${names[@]}"; do
	if pid=$(node_pid "$name"); then
		say "$name is still running from an earlier start (pid $pid); stopping it"
		leftover+=("$pid")
	fi
done
[ ${#leftover[@]} = 0 ] || stop_pids "${leftover[@]}"
for i in "${!names[@]}"; do
	for port in "${broker_ports[$i]}" "${controller_ports[$i]}"; do
		port_taken "$port" && die "port 127.0.0.1:$port is taken by another process; stop it first"
	done
done

write_log4j2
id=$(cluster_id)
for i in "${!names[@]}"; do
	name=${names[$i]}
	write_config "$i"
	mkdir -p "$home/logs/$name"
	if [ ! -f "$home/data/$name/meta.properties" ]; then
		say "formatting .kafka/data/$name (cluster id $id)"
		java -cp "$lib/*" -Dlog4j2.configurationFile="$home/config/log4j2.xml" -Dkafka.logs.dir="$home/logs/$name" \
			kafka.tools.StorageTool format --config "$home/config/$name.properties" --cluster-id "$id" >/dev/null ||
			die "could not format .kafka/data/$name"
	fi
done

pdeathsig=()
setpriv --help 2>/dev/null | grep -q pdeathsig && pdeathsig=(setpriv --pdeathsig TERM)

pids=()
stopping=""
stop_all() {
	[ -n "$stopping" ] && return
	stopping=1
	local alive=() i
	for i in "${!pids[@]}"; do
		kill -0 "${pids[$i]}" 2>/dev/null && alive+=("${pids[$i]}")
	done
	if [ ${#alive[@]} -gt 0 ]; then
		say "stopping ${#alive[@]} node(s)"
		stop_pids "${alive[@]}"
	fi
	for i in "${!pids[@]}"; do rm -f "$home/run/${names[$i]}.pid"; done
	say "stopped"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

start_node() {
	local i=$1 name=${names[$1]}
	# shellcheck disable=SC2086 # the option strings are lists of options
	"${pdeathsig[@]}" java $heap \
		-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
		-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		"-Xlog:gc*:file=$home/logs/$name/gc.log:time,tags:filecount=4,filesize=20M" \
		-Dlog4j2.configurationFile="$home/config/log4j2.xml" -Dkafka.logs.dir="$home/logs/$name" \
		${KAFKA_OPTS:-} \
		-cp "$lib/*" kafka.Kafka "$home/config/$name.properties" \
		</dev/null >>"$home/logs/$name/stdout.log" 2>&1 7>&- 9>&- &
	pids[i]=$!
	echo "${pids[$i]}" >"$home/run/$name.pid"
}

say "starting Kafka $version, $nodes node(s)"
t0=$SECONDS
for i in "${!names[@]}"; do start_node "$i"; done

# Wait until every broker answers. The secure node's answer is
# bin/kafkagrant's setup: it retries until the broker takes its admin.
deadline=$((SECONDS + start_timeout))
if [ -n "$secure" ]; then
	grant_log=$home/logs/${names[0]}/kafkagrant.log
	"$grant" -dir "$secure_dir" -wait "${start_timeout}s" >"$grant_log" 2>&1 7>&- 9>&- &
	grant_pid=$!
	while kill -0 "$grant_pid" 2>/dev/null; do
		if ! kill -0 "${pids[0]}" 2>/dev/null; then
			kill "$grant_pid" 2>/dev/null || true
			say "${names[0]} exited while starting; the end of its JVM output and server.log (.kafka/logs/${names[0]}/):"
			tail -n 20 "$home/logs/${names[0]}/stdout.log" "$home/logs/${names[0]}/server.log" >&2 2>/dev/null || true
			exit 1
		fi
		sleep 0.5
	done
	wait "$grant_pid" || { tail -n 20 "$grant_log" >&2; die "bin/kafkagrant could not set the broker up (see above and $grant_log)"; }
	grep -v '^kafkagrant: not yet' "$grant_log" | sed 's/^/kafka: /' >&7
fi
for i in "${!names[@]}"; do
	[ -n "$secure" ] && break
	until broker_answers "${broker_ports[$i]}"; do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			say "${names[$i]} exited while starting; the end of its JVM output and server.log (.kafka/logs/${names[$i]}/):"
			tail -n 20 "$home/logs/${names[$i]}/stdout.log" "$home/logs/${names[$i]}/server.log" >&2 2>/dev/null || true
			exit 1
		fi
		[ $SECONDS -lt $deadline ] || die "${names[$i]} did not answer on 127.0.0.1:${broker_ports[$i]} within $start_timeout s; see .kafka/logs/${names[$i]}/server.log"
		sleep 0.5
	done
done

brokers=""
for p in "${broker_ports[@]}"; do brokers+="${brokers:+,}127.0.0.1:$p"; done
say "up in $((SECONDS - t0)) s: data in .kafka/data/, logs in .kafka/logs/; Ctrl-C stops it"
[ -n "$secure" ] && say "each service's settings: $secure_dir/{order,customer,projector}.env; the admin's: $secure_dir/admin.env"
echo "KAFKA_BROKERS=$brokers"

# Run until a signal; a node that exits on its own is reported, and the
# script ends when none is left. SIGUSR1 restarts the nodes that exited.
exec 2>/dev/null
declare -A gone=()
restart=""
trap 'restart=1' USR1
while :; do
	if [ -n "$restart" ]; then
		restart=""
		for i in "${!gone[@]}"; do
			say "restarting ${names[$i]}"
			start_node "$i"
			unset "gone[$i]"
		done
	fi
	running=0
	for i in "${!pids[@]}"; do
		[ -n "${gone[$i]:-}" ] && continue
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			running=$((running + 1))
		else
			status=0
			wait "${pids[$i]}" || status=$?
			gone[$i]=1
			rm -f "$home/run/${names[$i]}.pid"
			say "${names[$i]} (pid ${pids[$i]}) exited with status $status; see .kafka/logs/${names[$i]}/server.log"
		fi
	done
	[ $running -gt 0 ] || exit 1
	sleep 1 &
	wait $! || true
done

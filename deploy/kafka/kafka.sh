#!/usr/bin/env bash
# A real Apache Kafka broker for segd's cluster tests, from Maven Central.
#
#   deploy/kafka/kafka.sh fetch VERSION          # prints the classpath dir (cached)
#   deploy/kafka/kafka.sh start VERSION DIR PORT # KRaft broker+controller on 127.0.0.1:PORT
#   deploy/kafka/kafka.sh stop DIR
#
# Three combined broker+controller nodes on one machine, for failover tests:
#
#   deploy/kafka/kafka.sh cluster-start VERSION DIR BASEPORT
#       node i (1..3): PLAINTEXT on 127.0.0.1:BASEPORT+2(i-1), CONTROLLER on the port after it,
#       files in DIR/node-i (broker.log, data/); replication factor 3, min.insync.replicas 2.
#       Returns once every node is unfenced (serving), and writes the bootstrap list to DIR/brokers.
#   deploy/kafka/kafka.sh cluster-stop DIR
#   deploy/kafka/kafka.sh node-kill DIR N        # SIGKILL node N, as a crash would
#   deploy/kafka/kafka.sh node-start DIR N       # restarts node N on its config and data
#
# Needs Java 17 and Maven. The broker's jars are cached in
# ${SEGD_KAFKA_CACHE:-$HOME/.cache/segd}/kafka-VERSION, outside the repo.
set -euo pipefail
cmd=${1:-}
cache=${SEGD_KAFKA_CACHE:-$HOME/.cache/segd}

# fetch runs inside $(...), where bash clears set -e: its failures are checked by hand, or a
# failed mvn would still mark the cache complete.
fetch() {
  # Two locals: in one `local a=.. b=$a` line, $a is expanded before a is set.
  local version=$1; local libs="$cache/kafka-$version"
  if [ -f "$libs/.complete" ]; then echo "$libs"; return; fi
  mkdir -p "$libs"
  local pom; pom=$(mktemp -d)/pom.xml
  local logging
  case "$version" in
    3.*) logging='<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
                  <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>' ;;
    *)   logging='<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>2.24.3</version></dependency>
                  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
                  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>' ;;
  esac
  cat > "$pom" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>segd</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    $logging
  </dependencies>
</project>
POM
  mvn -B -q -f "$pom" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2 \
    || { echo "kafka $version: mvn could not fetch the broker jars" >&2; return 1; }
  touch "$libs/.complete"
  echo "$libs"
}

# write_props FILE NODE_ID PORT CPORT VOTERS DATADIR RF MIN_ISR
write_props() {
  local file=$1 id=$2 port=$3 cport=$4 voters=$5 data=$6 rf=$7 isr=$8
  cat > "$file" <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
default.replication.factor=$rf
min.insync.replicas=$isr
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=16777216
auto.create.topics.enable=false
PROPS
}

# log_config VERSION DIR: WARN and up, plus KafkaRaftServer's INFO: its "Kafka Server started"
# (logged once the controller has unfenced the broker) is what await looks for.
log_config() {
  local version=$1 dir=$2
  case "$version" in
    3.*) printf 'log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\nlog4j.appender.stdout.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stdout.layout.ConversionPattern=[%%d] %%p %%m (%%c)%%n\nlog4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.KafkaRaftServer=INFO\n' > "$dir/log4j.properties" ;;
    *)   printf 'Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      PatternLayout:\n        pattern: "[%%d] %%p %%m (%%c)%%n"\n  Loggers:\n    Root:\n      level: WARN\n      AppenderRef:\n        - ref: STDOUT\n    Logger:\n      - name: kafka.server.KafkaRaftServer\n        level: INFO\n' > "$dir/log4j2.yaml" ;;
  esac
}

# cluster_id LIBS LOG DATADIR: the id DATADIR was formatted with, else a new one. Reusing it
# lets start and cluster-start run again on a DIR they ran on (format refuses another id).
# Runs inside $(...), so failures are checked by hand.
cluster_id() {
  local libs=$1 log=$2 data=$3 id
  if [ -f "$data/meta.properties" ]; then
    id=$(sed -n 's/^cluster\.id=//p' "$data/meta.properties")
    if [ -n "$id" ]; then echo "$id"; return; fi
  fi
  id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>"$log" | tail -1) \
    && [ -n "$id" ] || { echo "kafka: StorageTool random-uuid failed:" >&2; cat "$log" >&2; return 1; }
  echo "$id"
}

# format_storage VERSION LIBS DIR ID: formats DIR/node.properties' log dir for cluster ID;
# --ignore-formatted leaves an already formatted one (and its data) alone.
format_storage() {
  local version=$1 libs=$2 dir=$3 id=$4
  if ! java -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$dir/node.properties" --ignore-formatted >>"$dir/format.log" 2>&1; then
    echo "kafka $version: storage format failed:" >&2; cat "$dir/format.log" >&2; return 1
  fi
}

# launch VERSION LIBS DIR XMS XMX: runs the node configured in DIR in the background, its
# output appended to DIR/broker.log (a restarted node keeps the log of its earlier life).
launch() {
  local version=$1 libs=$2 dir=$3 xms=$4 xmx=$5 logopt
  case "$version" in
    3.*) logopt="-Dlog4j.configuration=file:$dir/log4j.properties" ;;
    *)   logopt="-Dlog4j2.configurationFile=$dir/log4j2.yaml" ;;
  esac
  nohup java -cp "$libs/*" "-Xms$xms" "-Xmx$xmx" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "$logopt" \
    kafka.Kafka "$dir/node.properties" >>"$dir/broker.log" 2>&1 &
  echo $! > "$dir/pid"
}

# alive PID: the process exists and has not exited. kill -0 alone is not enough: a dead JVM
# stays a zombie until init reaps it (its launching shell is gone), which can take seconds.
# A zombie still marked multi-threaded (Zl) has threads exiting, maybe still holding its ports.
alive() {
  local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  case "$st" in Z*l*) return 0 ;; Z*) return 1 ;; *) return 0 ;; esac
}

# await LABEL DIR PORT SECONDS [LOGPOS]: waits until the node in DIR accepts connections on
# PORT and, given LOGPOS, until its broker.log past byte LOGPOS says "Kafka Server started".
# In a cluster a broker is usable only once a controller quorum has unfenced it. 3.9 and 4.1
# open the PLAINTEXT port after that, and log the line just after; waiting for the line too
# does not rely on that order, and tells a restarted node from its earlier life.
await() {
  local label=$1 dir=$2 port=$3 secs=$4 logpos=${5:-} pid
  pid=$(cat "$dir/pid")
  for _ in $(seq 1 $(( secs * 2 ))); do
    # grep without -q reads all its input: with -q, tail could die of SIGPIPE and, under
    # pipefail, fail the test after grep had found the line.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
       { [ -z "$logpos" ] || tail -c +$(( logpos + 1 )) "$dir/broker.log" | grep 'Kafka Server started' >/dev/null; }; then
      return 0
    fi
    if ! alive "$pid"; then
      echo "$label exited; its log:" >&2; tail -50 "$dir/broker.log" >&2; return 1
    fi
    sleep 0.5
  done
  if [ -z "$logpos" ]; then echo "$label did not listen on $port within $secs s" >&2
  else echo "$label did not start on $port within $secs s" >&2; fi
  tail -50 "$dir/broker.log" >&2
  return 1
}

start() {
  local version=$1 dir=$2 port=$3 cport=$(( $3 + 1 ))
  local libs; libs=$(fetch "$version")
  mkdir -p "$dir/data"
  write_props "$dir/node.properties" 1 "$port" "$cport" "1@127.0.0.1:$cport" "$dir/data" 1 1
  log_config "$version" "$dir"
  local id; id=$(cluster_id "$libs" "$dir/format.log" "$dir/data")
  format_storage "$version" "$libs" "$dir" "$id"
  : > "$dir/broker.log"
  launch "$version" "$libs" "$dir" 256m 512m
  await "kafka $version" "$dir" "$port" 60
  echo "kafka $version on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/broker.log)"
}

# stop_nodes DIR...: stops the node in each DIR, all at once: stopped one by one, the last
# nodes would lose their controller quorum and hang in controlled shutdown.
stop_nodes() {
  local d pid pids=() dirs=()
  for d in "$@"; do
    if [ -f "$d/pid" ]; then pids+=("$(cat "$d/pid")"); dirs+=("$d"); fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 40); do
    local up=0
    for pid in "${pids[@]}"; do if alive "$pid"; then up=1; fi; done
    [ "$up" = 1 ] || break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for d in "${dirs[@]}"; do rm -f "$d/pid"; done
}

stop() { stop_nodes "$1"; }

# Cluster layout: node i's PLAINTEXT port; its CONTROLLER port is the next one.
node_port() { echo $(( $1 + ($2 - 1) * 2 )); }

# node_dir DIR N: DIR/node-N, for N in 1..3.
node_dir() {
  case "$2" in
    1|2|3) echo "$1/node-$2" ;;
    *) echo "kafka: node must be 1, 2 or 3, not '$2'" >&2; return 1 ;;
  esac
}

# ports_free PORT...: fails, naming it, on the first port something listens on.
ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "kafka: 127.0.0.1:$p is already in use" >&2; return 1
    fi
  done
}

# running DIR: whether the node in DIR has a pid file and that process is alive.
running() { [ -f "$1/pid" ] && alive "$(cat "$1/pid")"; }

cluster_start() {
  local version=$1 dir=$2 base=$3 i d
  local libs; libs=$(fetch "$version")
  for i in 1 2 3; do
    if running "$dir/node-$i"; then echo "kafka: node $i in $dir is already running" >&2; return 1; fi
  done
  # A port taken by another broker would only show up later, as a bind error or, if it is a
  # controller port, as INCONSISTENT_CLUSTER_ID errors from a quorum with a stranger.
  for i in 1 2 3; do
    ports_free "$(node_port "$base" "$i")" "$(( $(node_port "$base" "$i") + 1 ))"
  done
  # Ports in the kernel's ephemeral range can be taken, between the check above and the bind,
  # as the local end of any outgoing connection (seen here: a node failed to bind 39196).
  local lo hi
  if read -r lo hi 2>/dev/null < /proc/sys/net/ipv4/ip_local_port_range &&
     [ "$(( base + 5 ))" -ge "$lo" ] && [ "$base" -le "$hi" ]; then
    echo "kafka: warning: ports $base-$(( base + 5 )) overlap the ephemeral range $lo-$hi; a node may fail to bind" >&2
  fi
  local voters="" brokers=""
  for i in 1 2 3; do
    voters+="${voters:+,}$i@127.0.0.1:$(( $(node_port "$base" "$i") + 1 ))"
    brokers+="${brokers:+,}127.0.0.1:$(node_port "$base" "$i")"
  done
  mkdir -p "$dir"
  # One cluster id for all three: a node formatted with another id is refused by the quorum.
  local id; id=$(cluster_id "$libs" "$dir/format.log" "$dir/node-1/data")
  for i in 1 2 3; do
    d="$dir/node-$i"
    mkdir -p "$d/data"
    write_props "$d/node.properties" "$i" "$(node_port "$base" "$i")" "$(( $(node_port "$base" "$i") + 1 ))" \
      "$voters" "$d/data" 3 2
    log_config "$version" "$d"
    format_storage "$version" "$libs" "$d" "$id"
  done
  # node-start finds the version here (the ports are in each node.properties).
  echo "$version" > "$dir/version"
  # All three before waiting on any: no node gets past startup until two controllers are up.
  # Smaller heaps than a single node's: three JVMs share the machine.
  for i in 1 2 3; do
    : > "$dir/node-$i/broker.log"
    launch "$version" "$libs" "$dir/node-$i" 128m 384m
  done
  for i in 1 2 3; do
    # A half-started cluster is of no use to the tests and would hold the ports: stop it all.
    if ! await "kafka $version node $i" "$dir/node-$i" "$(node_port "$base" "$i")" 120 0; then
      stop_nodes "$dir/node-1" "$dir/node-2" "$dir/node-3"; return 1
    fi
  done
  echo "$brokers" > "$dir/brokers"
  for i in 1 2 3; do
    echo "kafka $version node $i on 127.0.0.1:$(node_port "$base" "$i") (pid $(cat "$dir/node-$i/pid"), log $dir/node-$i/broker.log)"
  done
}

cluster_stop() { stop_nodes "$1/node-1" "$1/node-2" "$1/node-3"; }

node_kill() {
  local d; d=$(node_dir "$1" "$2")
  if [ ! -f "$d/pid" ]; then echo "kafka: node $2 in $1 is not running (no $d/pid)" >&2; return 1; fi
  local pid; pid=$(cat "$d/pid")
  kill -9 "$pid" 2>/dev/null || true
  # Gone before returning, so its ports are free for node-start.
  for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  rm -f "$d/pid"
}

node_start() {
  local dir=$1 n=$2
  local d; d=$(node_dir "$dir" "$n")
  if [ ! -f "$dir/version" ] || [ ! -f "$d/node.properties" ]; then
    echo "kafka: no cluster in $dir (cluster-start it first)" >&2; return 1
  fi
  if running "$d"; then echo "kafka: node $n in $dir is already running" >&2; return 1; fi
  local version; version=$(cat "$dir/version")
  local libs; libs=$(fetch "$version")
  local port; port=$(sed -n 's|^advertised.listeners=PLAINTEXT://127.0.0.1:||p' "$d/node.properties")
  ports_free "$port" "$(( port + 1 ))"
  # Only the log written after this point counts: the earlier life's "started" line is there too.
  local logpos; logpos=$(wc -c < "$d/broker.log")
  launch "$version" "$libs" "$d" 128m 384m
  await "kafka $version node $n" "$d" "$port" 120 "$logpos"
  echo "kafka $version node $n on 127.0.0.1:$port (pid $(cat "$d/pid"), log $d/broker.log)"
}

usage() {
  echo "usage: $0 fetch VERSION | start VERSION DIR PORT | stop DIR" >&2
  echo "       $0 cluster-start VERSION DIR BASEPORT | cluster-stop DIR | node-kill DIR N | node-start DIR N" >&2
  exit 2
}

case "$cmd" in
  fetch) [ $# -eq 2 ] || usage; fetch "$2" ;;
  start) [ $# -eq 4 ] || usage; start "$2" "$3" "$4" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  cluster-start) [ $# -eq 4 ] || usage; cluster_start "$2" "$3" "$4" ;;
  cluster-stop) [ $# -eq 2 ] || usage; cluster_stop "$2" ;;
  node-kill) [ $# -eq 3 ] || usage; node_kill "$2" "$3" ;;
  node-start) [ $# -eq 3 ] || usage; node_start "$2" "$3" ;;
  *) usage ;;
esac

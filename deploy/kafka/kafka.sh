#!/usr/bin/env bash
# A real Apache Kafka broker for segd's cluster tests, from Maven Central.
#
#   deploy/kafka/kafka.sh fetch VERSION          # prints the classpath dir (cached)
#   deploy/kafka/kafka.sh start VERSION DIR PORT # KRaft broker+controller on 127.0.0.1:PORT
#   deploy/kafka/kafka.sh stop DIR
#
# Needs Java 17 and Maven. The broker's jars are cached in
# ${SEGD_KAFKA_CACHE:-$HOME/.cache/segd}/kafka-VERSION, outside the repo.
set -euo pipefail
cmd=${1:-}
cache=${SEGD_KAFKA_CACHE:-$HOME/.cache/segd}

fetch() {
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
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
  echo "$libs"
}

start() {
  local version=$1 dir=$2 port=$3 cport=$(( $3 + 1 ))
  local libs; libs=$(fetch "$version")
  mkdir -p "$dir/data"
  cat > "$dir/node.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=16777216
auto.create.topics.enable=false
PROPS
  local logopt
  case "$version" in
    3.*) printf 'log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\nlog4j.appender.stdout.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stdout.layout.ConversionPattern=[%%d] %%p %%m (%%c)%%n\nlog4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.KafkaRaftServer=INFO\n' > "$dir/log4j.properties"
         logopt="-Dlog4j.configuration=file:$dir/log4j.properties" ;;
    *)   printf 'Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      PatternLayout:\n        pattern: "[%%d] %%p %%m (%%c)%%n"\n  Loggers:\n    Root:\n      level: WARN\n      AppenderRef:\n        - ref: STDOUT\n' > "$dir/log4j2.yaml"
         logopt="-Dlog4j2.configurationFile=$dir/log4j2.yaml" ;;
  esac
  local id; id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>"$dir/format.log" | tail -1)
  if ! java -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$dir/node.properties" --ignore-formatted >>"$dir/format.log" 2>&1; then
    echo "kafka $version: storage format failed:" >&2; cat "$dir/format.log" >&2; return 1
  fi
  nohup java -cp "$libs/*" -Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "$logopt" \
    kafka.Kafka "$dir/node.properties" >"$dir/broker.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "kafka $version on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/broker.log)"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "kafka $version exited; its log:" >&2; tail -50 "$dir/broker.log" >&2; return 1
    fi
    sleep 0.5
  done
  echo "kafka $version did not listen on $port within 60 s" >&2
  tail -50 "$dir/broker.log" >&2
  return 1
}

stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "$cmd" in
  fetch) fetch "$2" ;;
  start) start "$2" "$3" "$4" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 fetch VERSION | start VERSION DIR PORT | stop DIR" >&2; exit 2 ;;
esac

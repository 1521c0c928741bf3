#!/usr/bin/env bash
# Runs segd's real-broker tests against every pinned Apache Kafka version:
# starts a KRaft broker from Maven Central jars (deploy/kafka/kafka.sh),
# runs the tests with SEGD_KAFKA_BROKERS pointing at it (the embedded-vs-real
# comparison and the instance failover test: SIGKILLed and state-less `segd
# run` processes), stops it; then, per version, starts a 3-broker cluster and
# runs the broker-failure test.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSIONS=${SEGD_KAFKA_VERSIONS:-"3.9.1 4.1.0"}
CLUSTER_VERSIONS=${SEGD_KAFKA_CLUSTER_VERSIONS:-"3.9.1 4.1.0"}
GO=${GO:-go}
# The failover tests keep their instances' logs here (and, when one times
# out, each live instance's /metrics and a goroutine dump).
export SEGD_ARTIFACTS=${SEGD_ARTIFACTS:-$PWD/artifacts}
base=$(mktemp -d)
dirs=()
cluster=""
cleanup() {
  for d in "${dirs[@]}"; do deploy/kafka/kafka.sh stop "$d" || true; done
  [ -z "$cluster" ] || deploy/kafka/kafka.sh cluster-stop "$cluster" || true
  rm -rf "$base"
}
trap cleanup EXIT
# Only test names, results and the tests' own log lines: segd's logs are
# printed for failures only.
filter() { grep -E '^(---|ok|FAIL|panic|\s+\S+_test.go)' | grep -v '^\s\+cluster_test.go:[0-9]*: last lines' || true; }
run() { # name, then the go test arguments
  local name=$1; shift
  local out="$base/$name.out"
  if ! "$GO" test -count=1 -v "$@" >"$out" 2>&1; then
    filter <"$out"; tail -80 "$out" >&2
    echo "real-broker tests failed: $name" >&2
    return 1
  fi
  filter <"$out"
}
port=19092
for v in $VERSIONS; do
  dir="$base/kafka-$v"
  dirs+=("$dir")
  deploy/kafka/kafka.sh start "$v" "$dir" "$port"
  export SEGD_KAFKA_BROKERS="127.0.0.1:$port" SEGD_KAFKA_VERSION="$v"
  run "engine-$v" -run 'RealKafka' ./engine
  run "failover-$v" -timeout 15m -run 'TestFailoverKillInstanceAndLoseState' ./cmd/segd
  unset SEGD_KAFKA_BROKERS SEGD_KAFKA_VERSION
  deploy/kafka/kafka.sh stop "$dir"
  port=$((port + 100))
done
port=29092
for v in $CLUSTER_VERSIONS; do
  cluster="$base/cluster-$v"
  deploy/kafka/kafka.sh cluster-start "$v" "$cluster" "$port"
  export SEGD_KAFKA_CLUSTER_DIR="$cluster" SEGD_KAFKA_VERSION="$v" SEGD_KAFKA_CLUSTER_BROKERS
  SEGD_KAFKA_CLUSTER_BROKERS=$(cat "$cluster/brokers")
  run "cluster-$v" -timeout 15m -run 'TestFailoverBrokerKilled' ./cmd/segd
  deploy/kafka/kafka.sh cluster-stop "$cluster"
  cluster=""
  unset SEGD_KAFKA_CLUSTER_DIR SEGD_KAFKA_CLUSTER_BROKERS SEGD_KAFKA_VERSION
  port=$((port + 100))
done

#!/usr/bin/env bash
# Runs segd's real-broker tests against every pinned Apache Kafka version:
# starts a KRaft broker from Maven Central jars (deploy/kafka/kafka.sh),
# runs the tests with SEGD_KAFKA_BROKERS pointing at it, stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSIONS=${SEGD_KAFKA_VERSIONS:-"3.9.1 4.1.0"}
GO=${GO:-go}
base=$(mktemp -d)
dirs=()
cleanup() { for d in "${dirs[@]}"; do deploy/kafka/kafka.sh stop "$d" || true; done; rm -rf "$base"; }
trap cleanup EXIT
port=19092
for v in $VERSIONS; do
  dir="$base/kafka-$v"
  dirs+=("$dir")
  deploy/kafka/kafka.sh start "$v" "$dir" "$port"
  SEGD_KAFKA_BROKERS="127.0.0.1:$port" $GO test -count=1 -run 'RealKafka' -v ./engine 2>&1 | grep -E '^(---|ok|FAIL|panic|\s+\S+_test.go)' || { echo "real-broker tests failed against Kafka $v" >&2; exit 1; }
  deploy/kafka/kafka.sh stop "$dir"
  port=$((port + 100))
done

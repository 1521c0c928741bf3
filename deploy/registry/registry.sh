#!/usr/bin/env bash
# A real schema registry for segd's registry tests: Apicurio Registry (Java 17), from Maven
# Central, speaking the Confluent-compatible API under /apis/ccompat/v7.
#
#   deploy/registry/registry.sh fetch            # prints the install dir (cached)
#   deploy/registry/registry.sh start DIR [PORT] # starts it on 127.0.0.1 (PORT 0 or none: a free
#                                                # port), waits until it answers, writes DIR/url
#   deploy/registry/registry.sh stop DIR         # SIGTERM, then SIGKILL after 10 s
#   deploy/registry/registry.sh kill DIR         # SIGKILL, as a crash would (DIR/url stays)
#
# Storage: the app's default is an in-memory H2 database, which a restart empties. start points
# it at an H2 file database in DIR instead (REGISTRY_DATASOURCE_URL, written at every commit),
# so a registry killed and started again on the same DIR keeps its schemas and ids, as a real
# deployment with durable storage does. A new DIR starts empty.
#
# Needs Java 17 and Maven. The unpacked app is cached in
# ${SEGD_REGISTRY_CACHE:-$HOME/.cache/segd}/apicurio-registry-VERSION, outside the repo.
set -euo pipefail
cmd=${1:-}
version=${SEGD_REGISTRY_VERSION:-2.6.13.Final}
cache=${SEGD_REGISTRY_CACHE:-$HOME/.cache/segd}

# fetch runs inside $(...), where bash clears set -e: failures are checked by hand, or a
# failed download would still mark the cache complete.
fetch() {
  local app="$cache/apicurio-registry-$version"
  if [ -f "$app/.complete" ]; then echo "$app"; return; fi
  rm -rf "$app"
  mkdir -p "$app"
  local tmp; tmp=$(mktemp -d)
  mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
    "-Dartifact=io.apicurio:apicurio-registry-app:$version:tar.gz:all" -DoutputDirectory="$tmp" >&2 \
    || { echo "registry $version: mvn could not fetch the app" >&2; rm -rf "$tmp"; return 1; }
  tar -xzf "$tmp"/apicurio-registry-app-*.tar.gz -C "$app" \
    || { echo "registry $version: could not unpack the app" >&2; rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
  # The tarball holds the runner jar and its lib/ directory, at the top or one level down.
  local jar; jar=$(find "$app" -maxdepth 2 -name "apicurio-registry-app-$version-runner.jar" | head -1)
  [ -n "$jar" ] || { echo "registry $version: no runner jar in the tarball" >&2; return 1; }
  echo "$jar" > "$app/runner"
  touch "$app/.complete"
  echo "$app"
}

# alive PID: the process exists and is not a zombie (see deploy/kafka/kafka.sh).
alive() {
  local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  case "$st" in Z*l*) return 0 ;; Z*) return 1 ;; *) return 0 ;; esac
}

# free_port: a port nothing listens on now, outside the kernel's ephemeral range when it can.
free_port() {
  local p
  for p in $(seq 18081 18181); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "registry: no free port in 18081-18181" >&2; return 1
}

start() {
  local dir=$1 port=${2:-0}
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && alive "$(cat "$dir/pid")"; then
    echo "registry: already running in $dir (pid $(cat "$dir/pid"))" >&2; return 1
  fi
  # A restart (after kill) takes the port it had, so the url clients hold stays right.
  if [ "$port" = 0 ] && [ -f "$dir/port" ]; then port=$(cat "$dir/port"); fi
  if [ "$port" = 0 ]; then port=$(free_port); fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "registry: 127.0.0.1:$port is already in use" >&2; return 1
  fi
  local app; app=$(fetch)
  local jar; jar=$(cat "$app/runner")
  echo "$port" > "$dir/port"
  local url="http://127.0.0.1:$port/apis/ccompat/v7"
  REGISTRY_DATASOURCE_URL="jdbc:h2:file:$dir/db;WRITE_DELAY=0" nohup java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$port" -jar "$jar" >>"$dir/registry.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/pid"
  local t0=$SECONDS
  for _ in $(seq 1 240); do
    # Ready when the subject list answers: [] when new, the kept subjects after a restart.
    if curl -fsS --max-time 2 "$url/subjects" 2>/dev/null | grep '^\[' >/dev/null; then
      echo "$url" > "$dir/url"
      echo "registry $version on $url (pid $pid, ready in $(( SECONDS - t0 )) s, log $dir/registry.log)"
      return 0
    fi
    if ! alive "$pid"; then
      echo "registry exited; its log:" >&2; tail -50 "$dir/registry.log" >&2; rm -f "$dir/pid"; return 1
    fi
    sleep 0.25
  done
  echo "registry did not answer on $url within 60 s; its log:" >&2; tail -50 "$dir/registry.log" >&2
  stop "$dir"
  return 1
}

stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  rm -f "$dir/pid"
}

kill_() {
  local dir=$1
  [ -f "$dir/pid" ] || { echo "registry: not running in $dir" >&2; return 1; }
  local pid; pid=$(cat "$dir/pid")
  kill -9 "$pid" 2>/dev/null || true
  # Gone before returning, so its port is free for start.
  for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  rm -f "$dir/pid"
}

usage() {
  echo "usage: $0 fetch | start DIR [PORT] | stop DIR | kill DIR" >&2
  exit 2
}

case "$cmd" in
  fetch) [ $# -eq 1 ] || usage; fetch ;;
  start) [ $# -ge 2 ] && [ $# -le 3 ] || usage; start "$2" "${3:-0}" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  kill) [ $# -eq 2 ] || usage; kill_ "$2" ;;
  *) usage ;;
esac

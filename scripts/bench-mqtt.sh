#!/usr/bin/env bash
# MQTT benchmark: Switchboard and Mosquitto side by side, same load
# generator (cmd/mqtt-bench), same run, same machine.
#
# Brokers (each started fresh, on free loopback ports):
#   mosquitto             Debian's package, no persistence, anonymous access
#   switchboard (fsync)   serve --dev, default durability (ack after fsync)
#   switchboard (batch)   serve --dev --durability batch (fan-out and fan-in)
#
# Scenarios, in this order, each broker in turn before the next scenario:
#   idle     IDLE_CONNS idle connections with one subscription each:
#            broker RSS growth per connection (measured first, on the fresh
#            processes)
#   fanout   QoS 0, 1 publisher -> 1,000 subscribers on one topic: peak,
#            then paced at half of that broker's own peak
#   fanin    QoS 1, 50 publishers (PUBACK window 16) -> 1 subscriber: peak,
#            then paced at half of that broker's own peak
#   many     QoS 0, 10,000 publishing connections on bench/<i> -> 1
#            subscriber on bench/#: peak
#
# Prints a markdown table at the end; everything (JSON results, broker logs,
# metrics snapshots) stays in $OUT.
#
# Environment: DURATION (10s) and WARMUP (2s) per run, IDLE_CONNS (5000),
# OUT (results directory, default a new temporary one), IDLE_WAIT (60:
# seconds to wait for an idle machine before each run).
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
IDLE_CONNS=${IDLE_CONNS:-5000}
IDLE_WAIT=${IDLE_WAIT:-60}
OUT=${OUT:-$(mktemp -d /tmp/bench-mqtt.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

log() { printf '== %s\n' "$*" >&2; }

# --- file descriptors: 10,000 publishers plus subscribers, in the
# generator and in each broker (children inherit the limit).
need_fds=12000
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need_fds" ]; then
	ulimit -Hn "$need_fds" 2>/dev/null || {
		echo "bench-mqtt: the open-file hard limit is $hard, at least $need_fds is needed" >&2
		exit 1
	}
fi
ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"

# --- Mosquitto, from the distribution.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
	log "installing mosquitto"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

# --- build
log "building switchboard and mqtt-bench"
# Which server code is measured: a digest of the non-test Go sources the
# binary is built from (the tree need not be a git checkout).
SRC_DIGEST=$(find adapters core internal cmd/switchboard -name '*.go' ! -name '*_test.go' -print0 |
	sort -z | xargs -0 cat | sha256sum | cut -c1-12)
go build -o "$OUT/switchboard" ./cmd/switchboard
go build -o "$OUT/mqtt-bench" ./cmd/mqtt-bench
BENCH=$OUT/mqtt-bench

read -r MQ_PORT SB_PORT SB_HTTP SBB_PORT SBB_HTTP <<<"$("$BENCH" -free-ports 5 | tr "\n" " ")"

PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT

# wait_port PORT: until something accepts connections there.
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench-mqtt: nothing listens on port $1" >&2
	exit 1
}

# Mosquitto: anonymous, in memory only. Queues large enough that no
# subscriber's messages are dropped for queue length, and TCP_NODELAY on
# its sockets like every Go server's (Mosquitto's default leaves Nagle's
# algorithm on, which delays small packets by up to tens of milliseconds).
cat >"$OUT/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
"$MOSQUITTO" -c "$OUT/mosquitto.conf" 2>"$OUT/mosquitto.log" &
MQ_PID=$!
PIDS+=("$MQ_PID")

# start_switchboard DURABILITY MQTT_PORT HTTP_PORT: a fresh data directory
# each time; the pid is left in LAST_PID.
start_switchboard() {
	rm -rf "$OUT/data-$1"
	"$OUT/switchboard" serve --dev --data "$OUT/data-$1" --durability "$1" \
		--http "127.0.0.1:$3" --mqtt "127.0.0.1:$2" --stomp off --amqp off \
		>"$OUT/switchboard-$1.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}
start_switchboard fsync "$SB_PORT" "$SB_HTTP"
SB_PID=$LAST_PID
start_switchboard batch "$SBB_PORT" "$SBB_HTTP"
SBB_PID=$LAST_PID
wait_port "$MQ_PORT"
wait_port "$SB_PORT"
wait_port "$SBB_PORT"

MQ="mosquitto"
SB="switchboard (fsync)"
SBB="switchboard (batch)"

# broker_args LABEL: the generator's address, pid and metrics flags.
broker_args() {
	case $1 in
	"$MQ") echo "-broker 127.0.0.1:$MQ_PORT -pid $MQ_PID" ;;
	"$SB") echo "-broker 127.0.0.1:$SB_PORT -pid $SB_PID -metrics http://127.0.0.1:$SB_HTTP/metrics" ;;
	"$SBB") echo "-broker 127.0.0.1:$SBB_PORT -pid $SBB_PID -metrics http://127.0.0.1:$SBB_HTTP/metrics" ;;
	esac
}

# wait_idle: the machine may be shared; wait (up to IDLE_WAIT seconds)
# until it was at least 90 % idle for 2 s. Each result records the CPU that
# other processes used during its window anyway.
wait_idle() {
	local deadline=$((SECONDS + IDLE_WAIT))
	while :; do
		read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
		sleep 2
		read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
		local busy=$(((u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1)))
		local idle=$(((i2 + w2) - (i1 + w1)))
		if [ $((busy * 10)) -le $((busy + idle)) ]; then
			return
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "machine still busy ($((100 * busy / (busy + idle))) % used), running anyway"
			return
		fi
	done
}

# run LABEL ARGS...: one generator run against the broker LABEL.
run() {
	local label=$1
	shift
	wait_idle
	# shellcheck disable=SC2046 # broker_args is split on purpose
	"$BENCH" $(broker_args "$label") -label "$label" -duration "$DURATION" -warmup "$WARMUP" \
		-json "$RESULTS" "$@" || log "run failed: $label $*"
}

log "results in $OUT"
log "idle memory ($IDLE_CONNS connections, fresh brokers)"
run "$MQ" -scenario idle -conns "$IDLE_CONNS"
run "$SB" -scenario idle -conns "$IDLE_CONNS"

log "fan-out, QoS 0, 1 -> 1000"
for b in "$MQ" "$SB" "$SBB"; do
	run "$b" -scenario fanout
done
for b in "$MQ" "$SB" "$SBB"; do
	run "$b" -scenario fanout -rate-from "$RESULTS" -rate-factor 0.5
done

log "fan-in, QoS 1, 50 -> 1"
for b in "$MQ" "$SB" "$SBB"; do
	run "$b" -scenario fanin
done
for b in "$MQ" "$SB" "$SBB"; do
	run "$b" -scenario fanin -rate-from "$RESULTS" -rate-factor 0.5
done

log "10,000 topics, QoS 0 -> 1 on bench/#"
for b in "$MQ" "$SB"; do
	run "$b" -scenario many
done

curl -fsS "http://127.0.0.1:$SB_HTTP/metrics" >"$OUT/switchboard-fsync.metrics" 2>/dev/null || true
curl -fsS "http://127.0.0.1:$SBB_HTTP/metrics" >"$OUT/switchboard-batch.metrics" 2>/dev/null || true

echo
echo "MQTT benchmark, $(date -u +%Y-%m-%dT%H:%MZ): $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(uname -sr), $(go version | cut -d' ' -f3)"
echo "mosquitto $("$MOSQUITTO" -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -1); runs of $DURATION after $WARMUP warm-up"
echo "switchboard sources: $SRC_DIGEST"
echo
"$BENCH" -report "$RESULTS"
# Anything the brokers complained about (besides Switchboard's --dev
# warning).
for f in "$OUT"/switchboard-*.log "$OUT/mosquitto.log"; do
	complaints=$(grep -E 'level=(WARN|ERROR)|[Ee]rror|[Ww]arning' "$f" | grep -v 'DEVELOPMENT MODE' || true)
	if [ -n "$complaints" ]; then
		echo
		echo "$(basename "$f"): $(echo "$complaints" | wc -l) warning/error lines, the first ones:"
		echo "$complaints" | head -3
	fi
done

#!/usr/bin/env bash
# Measures each service's memory (RSS) and CPU on this machine, the numbers
# deploy/k8s/base sizes its resource requests and limits from.
#
# It runs `rideshare up` (built from this checkout) on a fresh data folder
# and a free port, finds each child process by its `serve NAME` command line,
# and samples VmRSS every 5 s, then VmHWM (peak RSS) and the CPU time spent
# (utime+stime) from /proc:
#   phase idle:  --fleet 0, nothing happening, for DURATION seconds
#   phase fleet: the built-in fleet (30 simulated drivers) roaming and pinging
#                positions, plus RIDERS riders each requesting rides one after
#                another, for DURATION seconds
# Usage: bash deploy/measure.sh [DURATION] [RIDERS]   (from the repository root)
# deploy/README.md's numbers are from `bash deploy/measure.sh 180 20`.
set -euo pipefail

duration=${1:-60}
riders=${2:-10}
services=(identity users rides dispatch payments pricing notifications gateway)
hz=$(getconf CLK_TCK)

kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# pid_of NAME: the `serve NAME` child of the up process $up.
pid_of() { pgrep -P "$up" -f "serve $1( |$)" | head -n1; }

# The binary is built once rather than with `go run` for each phase: the
# same program, and a build failure shows at once.
bindir=$(mktemp -d)
bin=$bindir/rideshare
go build -o "$bin" ./cmd/rideshare
up= data=
trap '[[ -n $up ]] && kill -INT "$up" 2>/dev/null; wait; rm -rf "$bindir" "$data"' EXIT

start_up() {
	data=$(mktemp -d)
	"$bin" up --data "$data" --listen 127.0.0.1:0 --fleet "$1" >"$data/up.out" 2>&1 &
	up=$!
	for _ in $(seq 600); do
		grep -q 'rideshare is ready' "$data/up.out" 2>/dev/null && break
		sleep 0.5
	done
	grep -q 'rideshare is ready' "$data/up.out" || { cat "$data/up.out"; exit 1; }
	gw=$(sed -n 's/.*"gateway_url": "\(.*\)".*/\1/p' "$data/platform.json")
}

stop_up() {
	kill -INT "$up" 2>/dev/null || true
	wait "$up" 2>/dev/null || true
	rm -rf "$data"
	up= data=
}

# sample PHASE: DURATION seconds of samples, then one line per service:
# mean and max RSS, peak RSS (VmHWM), mean CPU in millicores.
sample() {
	declare -A sum max t0 n
	for s in "${services[@]}"; do
		p=$(pid_of "$s"); t0[$s]=$(ticks "$p"); sum[$s]=0; max[$s]=0; n[$s]=0
	done
	end=$((SECONDS + duration))
	while ((SECONDS < end)); do
		for s in "${services[@]}"; do
			r=$(kb VmRSS "$(pid_of "$s")")
			sum[$s]=$((sum[$s] + r)); n[$s]=$((n[$s] + 1))
			((r > max[$s])) && max[$s]=$r
		done
		sleep 5
	done
	for s in "${services[@]}"; do
		p=$(pid_of "$s")
		cpu=$(( ( $(ticks "$p") - t0[$s] ) * 1000 / hz / duration ))
		printf '%-6s %-14s rss_mean=%4d MiB rss_max=%4d MiB hwm=%4d MiB cpu_mean=%4d m\n' \
			"$1" "$s" $((sum[$s] / n[$s] / 1024)) $((max[$s] / 1024)) $(($(kb VmHWM "$p") / 1024)) "$cpu"
	done
}

# ride RIDER_NUMBER: signs a rider up and requests rides one after another
# until killed, each with a new Idempotency-Key.
ride() {
	local email="rider$1-$RANDOM@example.com" pw="correct horse battery" tok i=0
	curl -s "$gw/v1/accounts" -H 'Content-Type: application/json' \
		-d "{\"role\":\"rider\",\"name\":\"R$1\",\"email\":\"$email\",\"password\":\"$pw\"}" >/dev/null
	tok=$(curl -s "$gw/oauth2/token" -d grant_type=password -d client_id=rideshare-cli \
		-d "username=$email" --data-urlencode "password=$pw" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
	while true; do
		i=$((i + 1))
		id=$(curl -s "$gw/v1/rides" -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
			-H "Idempotency-Key: m$1-$i" \
			-d '{"pickup":{"lat":37.7955,"lng":-122.3937},"dropoff":{"lat":37.7890,"lng":-122.4010}}' |
			sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
		[[ -z $id ]] && { sleep 2; continue; }
		# wait for the ride to end before asking for the next one
		for _ in $(seq 120); do
			st=$(curl -s "$gw/v1/rides/$id" -H "Authorization: Bearer $tok" | sed -n 's/.*"status":"\([a-z_]*\)".*/\1/p')
			case $st in completed | cancelled | payment_declined | no_driver) echo "$st" >>"$data/rides.log"; break ;; esac
			sleep 1
		done
	done
}

start_up 0
sample idle
stop_up

start_up 30
pids=()
for r in $(seq "$riders"); do ride "$r" & pids+=($!); done
sample fleet
kill "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true
echo "rides finished during the fleet phase: $(sort "$data/rides.log" 2>/dev/null | uniq -c | tr '\n' ' ')"
stop_up

#!/usr/bin/env bash
# Two builds of portcullis under the same load at the same time:
#
#   test/bench/ab.sh [A [B]]
#
# A and B are git revisions, or "." for the work tree (default: A is HEAD,
# B the work tree). Both proxies run the load run's config (run.sh), in
# front of one upstream, and each gets its own wrk at once, round after
# round. It prints, per round and as medians, B/A of the requests served and
# of the CPU time per request (the scheduler's, /proc/PID/task/*/schedstat).
#
# Why: run.sh loads one proxy at a time, so the machine's drift between two
# runs (on a shared 2-CPU VM, the same proxy does 5,000 to 8,700 req/s in
# consecutive runs) is larger than the effect of most single changes. Loaded
# side by side, both builds see the same drift. Two copies of the same build
# give per-round CPU ratios of 0.96 to 1.05 here and medians over 12 rounds of
# 0.99 to 1.01 (of requests: 0.99 to 1.03), so CPU per request is the figure
# to read; a change below a percent is not measurable this way either.
#
# With SCENARIO=auth, each build's session comes from a real login through
# it (SESSIONS=login, the default): test/bench/login at test/oidc's
# oidc-provider, as run.sh logs in. What the login leaves behind is then in
# the comparison: the identity headers and roles the login worked out from
# the IdP's copy of the profile, which the requests' cookie copies meet (a
# deep compare of every claim on each request cost 10 to 20% of the proxy's
# CPU under run.sh's login and nothing with a minted cookie). SESSIONS=mint
# seals the cookie with mintcookie instead, which needs no node.
#
# APART=1 loads one build at a time instead, alternating within each round,
# as run.sh loads a proxy (wrk's 2 threads, CONNS=64): the machine is then
# not saturated, and a change to the latency of a request shows in the
# requests it serves although its CPU per request stays the same.
#
# Knobs (environment): ROUNDS=12 DURATION=5s CONNS=32 SCENARIO=bypass|auth
# SESSIONS=login|mint APART=0 PORT_BASE=19800
set -euo pipefail

cd "$(dirname "$0")/../.."
A=${1:-HEAD}
B=${2:-.}
ROUNDS=${ROUNDS:-12}
DURATION=${DURATION:-5s}
APART=${APART:-0}
THREADS=1
if [ "$APART" = 1 ]; then
	CONNS=${CONNS:-64}
	THREADS=2
fi
CONNS=${CONNS:-32}
SCENARIO=${SCENARIO:-bypass}
PORT_BASE=${PORT_BASE:-19800}
UPSTREAM_ADDR=127.0.0.1:$((PORT_BASE + 1))
OIDC_PORT=$((PORT_BASE + 2)) # test/oidc's provider with SESSIONS=login; bypass and minted sessions need none
SESSIONS=${SESSIONS:-login}
case $SESSIONS in
login | mint) ;;
*)
	echo "SESSIONS: login or mint, not $SESSIONS" >&2
	exit 2
	;;
esac
[ "$SCENARIO" = auth ] || SESSIONS=none
case $SCENARIO in
bypass) path=/api/tasks ;;
auth) path=/tasks ;;
*)
	echo "SCENARIO: bypass or auth, not $SCENARIO" >&2
	exit 2
	;;
esac

. test/bench/lib.sh
install_deb wrk wrk || { echo "ab.sh needs wrk" >&2; exit 1; }
# Before the builds, which take a minute or two.
if [ "$SESSIONS" = login ]; then
	command -v node >/dev/null || { echo "SESSIONS=login needs node (test/oidc's provider); SESSIONS=mint does not" >&2; exit 1; }
fi

work=$(mktemp -d)
trap cleanup EXIT

# build SIDE REV: portcullis and mintcookie of REV into $work/SIDE/.
build() {
	local side=$1 rev=$2 src=.
	mkdir -p "$work/$side"
	if [ "$rev" != . ]; then
		src=$work/src-$side
		mkdir -p "$src"
		git archive "$rev" | tar -x -C "$src"
	fi
	(cd "$src" && go build -o "$work/$side/" ./cmd/portcullis ./test/bench/mintcookie)
}
echo "building A=$A and B=$B..."
build a "$A"
build b "$B"
go build -o "$work/" ./test/bench/upstream ./test/bench/login

SESSION_KEY=$("$work/a/portcullis" keys)
start upstream "$work/upstream" -listen "$UPSTREAM_ADDR"
declare -A addr admin pid hdr
for side in a b; do
	n=0
	[ "$side" = b ] && n=2
	addr[$side]=127.0.0.1:$((PORT_BASE + 3 + n))
	admin[$side]=127.0.0.1:$((PORT_BASE + 4 + n))
done
if [ "$SESSIONS" = login ]; then
	start_oidc "$OIDC_PORT" "${addr[a]}" "${addr[b]}"
fi
for side in a b; do
	bench_config "${addr[$side]}" "${admin[$side]}" >"$work/$side.yaml"
	start "$side" "$work/$side/portcullis" serve --config "$work/$side.yaml"
	pid[$side]=$started
	hdr[$side]="Authorization: Basic YTpi"
	if [ "$SESSIONS" = mint ]; then
		hdr[$side]="Cookie: $("$work/$side/mintcookie" -config "$work/$side.yaml" -idp bench -email alice@example.com -groups cvat-admins)"
	fi
done
wait_up "http://$UPSTREAM_ADDR/"
for side in a b; do
	if [ "$SESSIONS" = login ]; then
		wait_up "http://${admin[$side]}/readyz" # the IdP's discovery is done
		# A browser's login through this build: the session its requests
		# bring is the one the login made.
		hdr[$side]="Cookie: $("$work/login" -proxy "http://${addr[$side]}" -idp bench)"
	fi
	wait_up "http://${admin[$side]}/healthz"
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "${hdr[$side]}" "http://${addr[$side]}$path")
	[ "$code" = 200 ] || { echo "$SCENARIO GET through $side: $code, want 200" >&2; exit 1; }
	wrk -t1 -c"$CONNS" -d1s -H "${hdr[$side]}" "http://${addr[$side]}$path" >/dev/null # warm up
done

requests() { awk '/requests in/ {print $1}' "$1"; }
echo
how="each at the same time"
[ "$APART" = 1 ] && how="one at a time"
sessions=""
[ "$SESSIONS" != none ] && sessions=" (sessions: $SESSIONS)"
echo "$SCENARIO$sessions: A=$A B=$B, $ROUNDS rounds of $DURATION, $CONNS connections each, $how, $(nproc) CPUs"
for round in $(seq "$ROUNDS"); do
	ca=$(cpu_us "${pid[a]}")
	cb=$(cpu_us "${pid[b]}")
	# Alternate which load starts first.
	order="a b"
	[ $((round % 2)) = 0 ] && order="b a"
	waits=()
	for side in $order; do
		wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -H "${hdr[$side]}" "http://${addr[$side]}$path" >"$work/wrk-$side" &
		waits+=($!)
		if [ "$APART" = 1 ]; then wait "$!"; fi
	done
	wait "${waits[@]}"
	na=$(requests "$work/wrk-a")
	nb=$(requests "$work/wrk-b")
	awk -v r="$round" -v na="$na" -v nb="$nb" -v ca=$(($(cpu_us "${pid[a]}") - ca)) -v cb=$(($(cpu_us "${pid[b]}") - cb)) 'BEGIN {
		printf "round %2d  requests A %6d B %6d  B/A %.3f   CPU/request A %5.1f µs B %5.1f µs  B/A %.3f\n", r, na, nb, nb / na, ca / na, cb / nb, (cb / nb) / (ca / na)
	}' | tee -a "$work/rounds"
done
awk "$awk_median"'
{ req = req " " $9; cpu = cpu " " $NF }
END { printf "\nmedian B/A: requests %.3f, CPU per request %.3f\n", median(req), median(cpu) }' "$work/rounds"

#!/usr/bin/env bash
# Quick load run: portcullis against a bare httputil.ReverseProxy with the
# same transport, in front of the same 512-byte upstream, under the same load
# (loadgen: CONNS keep-alive connections for DURATION, ROUNDS interleaved
# rounds). Prints the median requests/s and latencies of each, and the ratio
# portcullis/bare, for
#   auth   — GET with a session cookie (minted with the proxy's session
#            package and the config's key: no identity provider needed)
#   bypass — GET /api/... with Basic credentials, passed by rule.
# With PROFILE=1 it then takes a CPU profile of portcullis under the auth
# load and prints its top functions.
#
# Not part of `go test`: run it by hand, on a quiet machine if you can
# (the load average is printed, because every process here shares the CPUs).
set -euo pipefail

cd "$(dirname "$0")/../.."
CONNS=${CONNS:-64}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
PORT_BASE=${PORT_BASE:-19770}
PROFILE=${PROFILE:-0}

UPSTREAM_ADDR=127.0.0.1:$((PORT_BASE + 1))
BARE_ADDR=127.0.0.1:$((PORT_BASE + 2))
PROXY_ADDR=127.0.0.1:$((PORT_BASE + 3))
ADMIN_ADDR=127.0.0.1:$((PORT_BASE + 4))
PPROF_ADDR=127.0.0.1:$((PORT_BASE + 5))

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "building..."
for cmd in ./cmd/portcullis ./test/bench/loadgen ./test/bench/upstream ./test/bench/bareproxy ./test/bench/mintcookie; do
	go build -o "$work/" "$cmd"
done
[ "$PROFILE" = 1 ] && go build -o "$work/" ./test/bench/profproxy

cat >"$work/portcullis.yaml" <<EOF
server:
  listen: "$PROXY_ADDR"
  admin_listen: "$ADMIN_ADDR"
  public_url: "http://$PROXY_ADDR"
upstream:
  url: "http://$UPSTREAM_ADDR"
session:
  keys: ["$("$work/portcullis" keys)"]
sso:
  identity_providers:
    - id: bench
      protocol: OIDC
      server_url: http://127.0.0.1:9/   # never reached: sessions are minted
      client_id: bench
role_mapping:
  roles: [admin, business, user, worker]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
  strip_headers: [X-Forwarded-User]
rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
EOF
"$work/portcullis" check --config "$work/portcullis.yaml" >/dev/null

start() { # name, command...
	local name=$1
	shift
	"$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
}
wait_up() { # url
	for _ in $(seq 100); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "not up: $1" >&2
	exit 1
}

start upstream "$work/upstream" -listen "$UPSTREAM_ADDR"
start bareproxy "$work/bareproxy" -listen "$BARE_ADDR" -upstream "http://$UPSTREAM_ADDR"
start portcullis "$work/portcullis" serve --config "$work/portcullis.yaml" --log-level error
wait_up "http://$UPSTREAM_ADDR/"
wait_up "http://$BARE_ADDR/"
wait_up "http://$ADMIN_ADDR/healthz"

mint() { "$work/mintcookie" -config "$work/portcullis.yaml" -email alice@example.com -groups cvat-admins; }

# Sanity: the cookie opens a session, and the bypass really bypasses.
cookie=$(mint)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "http://$PROXY_ADDR/tasks")
[ "$code" = 200 ] || { echo "authenticated GET through portcullis: $code, want 200" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$PROXY_ADDR/tasks")
[ "$code" = 401 ] || { echo "GET without a session: $code, want 401" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Basic YTpi' "http://$PROXY_ADDR/api/tasks")
[ "$code" = 200 ] || { echo "bypassed GET through portcullis: $code, want 200" >&2; exit 1; }

load() { # scenario target round
	local scenario=$1 target=$2 round=$3 addr hdr
	addr=$BARE_ADDR
	[ "$target" = portcullis ] && addr=$PROXY_ADDR
	if [ "$scenario" = auth ]; then
		# A fresh cookie each round, as a browser would have: an old one makes
		# portcullis re-seal it on every request once LastSeen is a minute old.
		hdr="Cookie: $(mint)"
		url="http://$addr/tasks"
	else
		hdr="Authorization: Basic YTpi"
		url="http://$addr/api/tasks"
	fi
	local out pid before after sent
	pid=${pids[1]}
	[ "$target" = portcullis ] && pid=${pids[2]}
	before=$(cputicks "$pid")
	out=$("$work/loadgen" -url "$url" -c "$CONNS" -d "$DURATION" -H "$hdr")
	after=$(cputicks "$pid")
	sent=${out##*sent=}
	# The proxy's own CPU time per request: unlike req/s, barely moved by
	# whatever else the machine is running.
	echo "$scenario $target $round $out cpu_us=$(((after - before) * 1000000 / CLK_TCK / sent))" | tee -a "$work/results"
}
cputicks() { # utime + stime of a process, in clock ticks
	awk '{print $14 + $15}' "/proc/$1/stat"
}
CLK_TCK=$(getconf CLK_TCK)

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) CPUs)"
for round in $(seq "$ROUNDS"); do
	# Alternate which goes first, so drift in the machine's load hits both.
	if [ $((round % 2)) = 1 ]; then order="bare portcullis"; else order="portcullis bare"; fi
	for scenario in auth bypass; do
		for target in $order; do
			load "$scenario" "$target" "$round"
		done
	done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

echo
awk '
function median(list,   n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
	key = $1 " " $2
	for (i = 4; i <= NF; i++) { split($i, kv, "="); v[key, kv[1]] = v[key, kv[1]] " " kv[2] }
	scen[$1] = 1
}
END {
	printf "%-8s %-11s %10s %9s %9s %14s\n", "scenario", "proxy", "req/s", "p50 ms", "p99 ms", "proxy CPU/req"
	for (s in scen) {
		for (t = 0; t < 2; t++) {
			p = t ? "portcullis" : "bare"
			rps[s, p] = median(v[s " " p, "rps"])
			cpu[s, p] = median(v[s " " p, "cpu_us"])
			printf "%-8s %-11s %10.0f %9.3f %9.3f %11.0f µs\n", s, p, rps[s, p], median(v[s " " p, "p50_ms"]), median(v[s " " p, "p99_ms"]), cpu[s, p]
		}
	}
	print ""
	for (s in scen) printf "%-8s portcullis/bare: req/s ratio %.2f, CPU per request ratio %.2f\n", s, rps[s, "portcullis"] / rps[s, "bare"], cpu[s, "portcullis"] / cpu[s, "bare"]
}' "$work/results"

if [ "$PROFILE" = 1 ]; then
	echo
	echo "profiling portcullis under the auth load..."
	kill "${pids[2]}"
	wait "${pids[2]}" 2>/dev/null || true
	start profproxy "$work/profproxy" -config "$work/portcullis.yaml" -pprof "$PPROF_ADDR"
	wait_up "http://$ADMIN_ADDR/healthz"
	"$work/loadgen" -url "http://$PROXY_ADDR/tasks" -c "$CONNS" -d 12s -H "Cookie: $(mint)" >/dev/null &
	loadpid=$!
	sleep 1
	curl -s -o "$work/cpu.pprof" "http://$PPROF_ADDR/debug/pprof/profile?seconds=10"
	wait "$loadpid"
	go tool pprof -top -nodecount=25 "$work/profproxy" "$work/cpu.pprof" 2>/dev/null
	echo
	go tool pprof -top -cum -nodecount=40 "$work/profproxy" "$work/cpu.pprof" 2>/dev/null | tail -n +7
	cp "$work/cpu.pprof" "${PROFILE_OUT:-/tmp/portcullis-cpu.pprof}"
	echo "profile saved to ${PROFILE_OUT:-/tmp/portcullis-cpu.pprof}"
fi

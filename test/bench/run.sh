#!/usr/bin/env bash
# The load comparison of issue 6, in one command:
#
#   test/bench/run.sh
#
# It builds portcullis and a bare httputil.ReverseProxy with the same tuned
# transport (test/bench/bareproxy), starts a 512-byte upstream
# (test/bench/upstream) and the real OpenID Connect provider of the tests
# (test/oidc, npm oidc-provider), logs in through portcullis like a browser
# (test/bench/login) to get a real session, and drives both proxies with the
# same load, interleaved, for several rounds. It prints the medians and the
# ratio portcullis/bare of:
#
#   auth      GET with the session cookie: req/s and p99 latency, also
#             through a second portcullis with session.store redis (its
#             own redis-server, installed from Debian if missing)
#   bypass    GET /api/... with Basic credentials, passed by rule: req/s
#   upload    one 1 GiB upload (authenticated): MiB/s, and portcullis's RSS growth
#   download  one 1 GiB download (authenticated): MiB/s, and RSS growth
#   idle      10,000 idle keep-alive client connections: RSS per connection
#   logins    full logins per second at the OIDC provider, CPU per login
#
# Load comes from wrk (installed from Debian if missing), else from the Go
# load generator in test/bench/loadgen (LOADGEN=go forces it). portcullis
# runs as `portcullis serve` does by default: JSON logs at info, so every
# request writes its access line (to a file here).
#
# With OAUTH2_PROXY=/path/to/oauth2-proxy (a binary built outside the
# clone; docs/performance.md says how), oauth2-proxy is a third contestant
# in the auth and bypass rounds, set up as CVAT's users set it up: the same
# IdP, client and upstream, its cookie session store, its access lines on
# (to a file), the user's email and groups passed upstream in headers, and
# /api/ let through unauthenticated (--skip-auth-route). It logs in through
# it like a browser, and prints oauth2-proxy/bare next to portcullis/bare.
#
# It is a benchmark, not a test: nothing in test/run.sh or CI runs it. Every
# process shares the machine's CPUs, so only ratios measured in the same run
# mean anything; the load average is printed before and after.
#
# Knobs (environment): CONNS=64 THREADS=2 DURATION=3s ROUNDS=15
# STREAM_BYTES=1073741824 STREAM_ROUNDS=11 IDLE_CONNS=10000 LOGIN_CONNS=4
# LOGIN_DURATION=10s (0, like IDLE_CONNS=0 or STREAM_ROUNDS=0, skips that part) LOADGEN=auto|wrk|go PORT_BASE=19770 LOG_LEVEL=info
# PORTCULLIS_GOGC (GOGC of the portcullis processes only; empty: portcullis's
# default of 200)
# OAUTH2_PROXY (empty: oauth2-proxy is not measured) OAUTH2_PROXY_FLAGS (more
# flags for it, split on spaces)
# PROFILE=1 (then CPU profiles of both proxies under the auth load, or the
# bypass load with PROFILE_SCENARIO=bypass, saved to PROFILE_OUT, default
# /tmp/portcullis-cpu.pprof, and PROFILE_OUT with -bare).
set -euo pipefail

cd "$(dirname "$0")/../.."
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
# Many short rounds rather than a few long ones: on a shared machine the
# speed drifts over seconds, and the two runs of a pair should see the same
# machine. One round's ratio moves by about 0.1 on a shared 2-CPU VM, and the
# median of 9 rounds by a few hundredths from run to run; 15 narrow that, and
# the middle half of the rounds is printed next to each median.
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-15}
STREAM_BYTES=${STREAM_BYTES:-1073741824}
# A 1 GiB transfer takes half a second over loopback, and one round's ratio
# moves by 0.2 on a shared machine (0.78 to 1.25 in one run of 15 rounds,
# where neither proxy runs any of its own code while the bytes flow): many
# rounds, and the middle half printed, as for the requests.
STREAM_ROUNDS=${STREAM_ROUNDS:-11}
IDLE_CONNS=${IDLE_CONNS:-10000}
LOGIN_CONNS=${LOGIN_CONNS:-4}
LOGIN_DURATION=${LOGIN_DURATION:-10s}
LOADGEN=${LOADGEN:-auto}
PORT_BASE=${PORT_BASE:-19770}
LOG_LEVEL=${LOG_LEVEL:-info}
# GOGC for the portcullis processes only: empty leaves portcullis's own
# default (200, cmd/portcullis), 100 measures it at Go's default. The bare
# proxy runs as Go sets it (100, unless GOGC is in the environment).
PORTCULLIS_GOGC=${PORTCULLIS_GOGC:-}
PROFILE=${PROFILE:-0}
OAUTH2_PROXY=${OAUTH2_PROXY:-}
OAUTH2_PROXY_FLAGS=${OAUTH2_PROXY_FLAGS:-}

UPSTREAM_ADDR=127.0.0.1:$((PORT_BASE + 1))
BARE_ADDR=127.0.0.1:$((PORT_BASE + 2))
PROXY_ADDR=127.0.0.1:$((PORT_BASE + 3))
ADMIN_ADDR=127.0.0.1:$((PORT_BASE + 4))
PPROF_ADDR=127.0.0.1:$((PORT_BASE + 5))
OIDC_PORT=$((PORT_BASE + 6))
# The same proxy with session.store redis, and its Redis (PORT_BASE + 7 is
# the bare proxy's pprof with PROFILE=1).
REDIS_PROXY_ADDR=127.0.0.1:$((PORT_BASE + 8))
REDIS_ADMIN_ADDR=127.0.0.1:$((PORT_BASE + 9))
REDIS_PORT=$((PORT_BASE + 10))
OAUTH2_ADDR=127.0.0.1:$((PORT_BASE + 11)) # oauth2-proxy, with OAUTH2_PROXY

. test/bench/lib.sh

# wrk from Debian, installed here because the benchmark is not part of the
# tests (test/run.sh does not install it).
[ "$LOADGEN" = go ] || install_deb wrk wrk || echo "could not install wrk; using the Go load generator"
install_deb redis-server redis-server || echo "could not install redis-server; the Redis store is not measured"
if [ "$LOADGEN" = wrk ] || { [ "$LOADGEN" = auto ] && command -v wrk >/dev/null; }; then
	LOADGEN=wrk
else
	LOADGEN=go
fi

# 10,000 client connections need as many descriptors in the client and in
# each proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_CONNS + 1024)) ]; then
	echo "ulimit -n is $(ulimit -n): holding $((($(ulimit -n) - 1024))) idle connections instead of $IDLE_CONNS"
	IDLE_CONNS=$(($(ulimit -n) - 1024))
fi

work=$(mktemp -d)
trap cleanup EXIT

echo "building..."
for cmd in ./cmd/portcullis ./test/bench/loadgen ./test/bench/upstream ./test/bench/bareproxy \
	./test/bench/login ./test/bench/stream ./test/bench/idle ./test/bench/mintcookie; do
	go build -o "$work/" "$cmd"
done
[ "$PROFILE" = 1 ] && go build -o "$work/" ./test/bench/profproxy

# The real OIDC provider of the tests; without node, sessions are minted
# with the proxy's session package instead (and the run says so).
SESSIONS=minted
if command -v node >/dev/null; then
	start_oidc "$OIDC_PORT" "$PROXY_ADDR" "$REDIS_PROXY_ADDR" ${OAUTH2_PROXY:+"http://$OAUTH2_ADDR/oauth2/callback"}
	OIDC_PID=$started
	SESSIONS=oidc
else
	echo "node not found: sessions are minted, and logins are not measured"
	if [ -n "$OAUTH2_PROXY" ]; then
		echo "OAUTH2_PROXY needs node: oauth2-proxy's sessions come from logins at test/oidc's provider" >&2
		exit 1
	fi
fi

SESSION_KEY=$("$work/portcullis" keys)
bench_config "$PROXY_ADDR" "$ADMIN_ADDR" >"$work/portcullis.yaml"
"$work/portcullis" check --config "$work/portcullis.yaml" >/dev/null
# The Redis store needs real logins (mintcookie seals cookie-store sessions).
REDIS_STORE=0
if [ "$SESSIONS" = oidc ] && command -v redis-server >/dev/null; then
	REDIS_STORE=1
	bench_config "$REDIS_PROXY_ADDR" "$REDIS_ADMIN_ADDR" "store: redis" "redis: {url: \"redis://127.0.0.1:$REDIS_PORT/0\"}" \
		>"$work/portcullis-redis.yaml"
	"$work/portcullis" check --config "$work/portcullis-redis.yaml" >/dev/null
fi

start upstream "$work/upstream" -listen "$UPSTREAM_ADDR"
UPSTREAM_PID=$started
start bareproxy "$work/bareproxy" -listen "$BARE_ADDR" -upstream "http://$UPSTREAM_ADDR"
BARE_PID=$started
proxy_env=()
[ -n "$PORTCULLIS_GOGC" ] && proxy_env=(env GOGC="$PORTCULLIS_GOGC")
start portcullis "${proxy_env[@]}" "$work/portcullis" serve --config "$work/portcullis.yaml" --log-level "$LOG_LEVEL"
PROXY_PID=$started
if [ "$REDIS_STORE" = 1 ]; then
	start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
	REDIS_PID=$started
	start portcullis-redis "${proxy_env[@]}" "$work/portcullis" serve --config "$work/portcullis-redis.yaml" --log-level "$LOG_LEVEL"
	REDIS_PROXY_PID=$started
fi
if [ -n "$OAUTH2_PROXY" ]; then
	# oauth2-proxy as CVAT's users run it in front of the application (its
	# defaults but for what this list says):
	#   --provider oidc, the client, the scopes: those portcullis uses
	#   --cookie-secure=false: the benchmark is plain HTTP, as for portcullis
	#   --email-domain '*': every user of the IdP, as portcullis admits them
	#   --pass-basic-auth=false: no Authorization header made up for the
	#     upstream (portcullis sends none); --pass-user-headers (its default)
	#     passes X-Forwarded-User, -Email, -Groups and -Preferred-Username,
	#     its counterpart of portcullis's X-Email and X-Groups
	#   --skip-auth-route '^/api/': the bypass (it matches the path alone;
	#     portcullis's rule also wants an Authorization header)
	# Its session store is the cookie (the default), --reverse-proxy is off
	# (the default), and its request log, on by default, goes to a file like
	# portcullis's access lines; off (--request-logging=false) when
	# LOG_LEVEL turns those off. It writes each line with a write(2) per
	# field of its template (26 a line), and its upstream transport is Go's
	# default (2 idle connections kept per host): both are oauth2-proxy as
	# it ships, with no flag to change them.
	oauth2_flags=()
	case $LOG_LEVEL in warn | error) oauth2_flags+=(--request-logging=false) ;; esac
	# shellcheck disable=SC2206 # split on spaces, as documented
	oauth2_flags+=($OAUTH2_PROXY_FLAGS)
	start oauth2-proxy "$OAUTH2_PROXY" \
		--http-address "$OAUTH2_ADDR" \
		--upstream "http://$UPSTREAM_ADDR/" \
		--provider oidc \
		--oidc-issuer-url "http://127.0.0.1:$OIDC_PORT" \
		--client-id portcullis \
		--client-secret portcullis-secret \
		--scope "openid email profile groups" \
		--redirect-url "http://$OAUTH2_ADDR/oauth2/callback" \
		--cookie-secret "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
		--cookie-secure=false \
		--email-domain '*' \
		--pass-basic-auth=false \
		--pass-user-headers=true \
		--skip-auth-route '^/api/' \
		--reverse-proxy=false \
		"${oauth2_flags[@]}"
	OAUTH2_PID=$started
fi
wait_up "http://$UPSTREAM_ADDR/"
wait_up "http://$BARE_ADDR/"
[ -n "$OAUTH2_PROXY" ] && wait_up "http://$OAUTH2_ADDR/ready" # its IdP's discovery is done
if [ "$SESSIONS" = oidc ]; then
	wait_up "http://$ADMIN_ADDR/readyz" # the IdP's discovery is done
else
	wait_up "http://$ADMIN_ADDR/healthz"
fi
[ "$REDIS_STORE" = 1 ] && wait_up "http://$REDIS_ADMIN_ADDR/readyz" # Redis answers too

# session prints the Cookie header of a fresh session: a real login at the
# OIDC provider, or a minted one.
session() {
	if [ "$SESSIONS" = oidc ]; then
		"$work/login" -proxy "http://$PROXY_ADDR" -idp bench
	else
		"$work/mintcookie" -config "$work/portcullis.yaml" -idp bench -email alice@example.com -groups cvat-admins
	fi
}

# Sanity: the session opens, a request without one is refused, and the
# bypass really bypasses.
cookie=$(session)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "http://$PROXY_ADDR/tasks")
[ "$code" = 200 ] || { echo "authenticated GET through portcullis: $code, want 200" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$PROXY_ADDR/tasks")
[ "$code" = 401 ] || { echo "GET without a session: $code, want 401" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Basic YTpi' "http://$PROXY_ADDR/api/tasks")
[ "$code" = 200 ] || { echo "bypassed GET through portcullis: $code, want 200" >&2; exit 1; }
# oauth2_session prints the Cookie header of a fresh login through
# oauth2-proxy (/oauth2/start, the IdP, /oauth2/callback).
oauth2_session() {
	"$work/login" -proxy "http://$OAUTH2_ADDR" -prefix /oauth2 -start '/oauth2/start?rd=%2F' -cookie-name _oauth2_proxy
}
if [ -n "$OAUTH2_PROXY" ]; then
	oauth2_cookie=$(oauth2_session)
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $oauth2_cookie" "http://$OAUTH2_ADDR/tasks")
	[ "$code" = 200 ] || { echo "authenticated GET through oauth2-proxy: $code, want 200" >&2; exit 1; }
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://$OAUTH2_ADDR/tasks")
	[ "$code" != 200 ] || { echo "GET without a session through oauth2-proxy: 200, want a refusal" >&2; exit 1; }
	code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Basic YTpi' "http://$OAUTH2_ADDR/api/tasks")
	[ "$code" = 200 ] || { echo "bypassed GET through oauth2-proxy: $code, want 200" >&2; exit 1; }
fi
if [ "$REDIS_STORE" = 1 ]; then
	redis_cookie=$("$work/login" -proxy "http://$REDIS_PROXY_ADDR" -idp bench)
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $redis_cookie" "http://$REDIS_PROXY_ADDR/tasks")
	[ "$code" = 200 ] || { echo "authenticated GET through portcullis (Redis store): $code, want 200" >&2; exit 1; }
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REDIS_PROXY_ADDR/tasks")
	[ "$code" = 401 ] || { echo "GET without a session (Redis store): $code, want 401" >&2; exit 1; }
fi

cputicks() { # utime + stime of a process, in clock ticks
	awk '{print $14 + $15}' "/proc/$1/stat"
}
CLK_TCK=$(getconf CLK_TCK)
syscw() { awk '/^syscw/ {print $2}' "/proc/$1/io"; }
# Targets: bare, portcullis (cookie store), redis (portcullis with the
# Redis store) and oauth2-proxy (with OAUTH2_PROXY).
addr_of() { case $1 in portcullis) echo "$PROXY_ADDR" ;; redis) echo "$REDIS_PROXY_ADDR" ;; oauth2-proxy) echo "$OAUTH2_ADDR" ;; *) echo "$BARE_ADDR" ;; esac; }
pid_of() { case $1 in portcullis) echo "$PROXY_PID" ;; redis) echo "$REDIS_PROXY_PID" ;; oauth2-proxy) echo "$OAUTH2_PID" ;; *) echo "$BARE_PID" ;; esac; }
# auth_header TARGET: the Cookie header of that target's session.
auth_header() { case $1 in redis) echo "Cookie: $redis_cookie" ;; oauth2-proxy) echo "Cookie: $oauth2_cookie" ;; *) echo "Cookie: $cookie" ;; esac; }

# drive URL HEADER: one load run; prints "rps= p50_ms= p99_ms= requests="
drive() {
	local url=$1 hdr=$2
	if [ "$LOADGEN" = wrk ]; then
		wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$hdr" "$url" | awk '
			function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
			/Non-2xx/ { bad = $NF }
			/Socket errors/ { errs = $0 }
			/requests in/ { n = $1 }
			/Requests\/sec/ { rps = $2 }
			$1 == "50%" { p50 = ms($2) }
			$1 == "99%" { p99 = ms($2) }
			END {
				if (bad > 0) { print "wrk: " bad " responses were not 2xx or 3xx" > "/dev/stderr"; exit 1 }
				printf "rps=%.0f p50_ms=%.3f p99_ms=%.3f requests=%d\n", rps, p50, p99, n
			}'
	else
		"$work/loadgen" -url "$url" -c "$CONNS" -d "$DURATION" -H "$hdr" |
			sed -E 's/ requests=[0-9]+ errors=[0-9]+ sent=/ requests=/'
	fi
}

load() { # scenario target round header path
	local scenario=$1 target=$2 round=$3 hdr=$4 path=$5 pid out before after n extra=
	pid=$(pid_of "$target")
	before=$(cputicks "$pid")
	wbefore=$(syscw "$pid")
	[ "$target" = redis ] && rbefore=$(cputicks "$REDIS_PID")
	ubefore=$(cputicks "$UPSTREAM_PID")
	out=$(drive "http://$(addr_of "$target")$path" "$hdr")
	after=$(cputicks "$pid")
	uafter=$(cputicks "$UPSTREAM_PID")
	wafter=$(syscw "$pid")
	n=${out##*requests=}
	# With the Redis store, redis-server's CPU per request too: part of
	# the cost of that store that the proxy's own CPU does not show.
	[ "$target" = redis ] && extra=" redis_cpu_us=$((($(cputicks "$REDIS_PID") - rbefore) * 1000000 / CLK_TCK / n))"
	# The proxy's own CPU time per request: less moved than req/s by
	# whatever else the machine is running. And its write(2) calls per
	# request (two for the bare proxy: upstream request, client response).
	# The upstream's CPU per request shows what the proxy costs the
	# application behind it: the headers it adds, and its latency (a slower
	# proxy hands the upstream fewer requests per wakeup).
	echo "$scenario $target $round $out cpu_us=$(((after - before) * 1000000 / CLK_TCK / n)) upstream_cpu_us=$(((uafter - ubefore) * 1000000 / CLK_TCK / n)) writes=$(awk -v w=$((wafter - wbefore)) -v n="$n" 'BEGIN { printf "%.2f", w / n }')$extra" | tee -a "$work/results"
}

order() { # round target...: the targets, reversed every other round, so drift in load hits all alike
	local round=$1 out= target
	shift
	for target in "$@"; do
		if [ $((round % 2)) = 1 ]; then out="$out $target"; else out="$target $out"; fi
	done
	echo $out
}
auth_targets="bare portcullis"
[ "$REDIS_STORE" = 1 ] && auth_targets="$auth_targets redis"
bypass_targets="bare portcullis"
if [ -n "$OAUTH2_PROXY" ]; then
	auth_targets="$auth_targets oauth2-proxy"
	bypass_targets="$bypass_targets oauth2-proxy"
fi

echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(go version | cut -d' ' -f3), load generator: $LOADGEN ($THREADS threads, $CONNS connections, $DURATION per run), sessions: $SESSIONS${PORTCULLIS_GOGC:+, portcullis with GOGC=$PORTCULLIS_GOGC}${OAUTH2_PROXY:+, $("$OAUTH2_PROXY" --version 2>&1)}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== requests (${ROUNDS} rounds)"
for target in $auth_targets; do # warm them up, unrecorded
	DURATION=1s drive "http://$(addr_of "$target")/tasks" "$(auth_header "$target")" >/dev/null
done
for round in $(seq "$ROUNDS"); do
	# A fresh login each round, as a browser's cookie would be: one sealed
	# more than a minute ago gets re-sealed on every request by a client
	# that, unlike a browser, never stores the new one.
	cookie=$(session)
	# The Redis store's session comes from a login through its own proxy:
	# one lookup in Redis per request.
	[ "$REDIS_STORE" = 1 ] && redis_cookie=$("$work/login" -proxy "http://$REDIS_PROXY_ADDR" -idp bench)
	[ -n "$OAUTH2_PROXY" ] && oauth2_cookie=$(oauth2_session)
	for target in $(order "$round" $auth_targets); do
		load auth "$target" "$round" "$(auth_header "$target")" /tasks
	done
	for target in $(order $((round + 1)) $bypass_targets); do
		load bypass "$target" "$round" "Authorization: Basic YTpi" /api/tasks
	done
done

echo
echo "== streaming $((STREAM_BYTES >> 20)) MiB (${STREAM_ROUNDS} rounds)"
for round in $(seq "$STREAM_ROUNDS"); do
	cookie=$(session)
	for mode in upload download; do
		for target in $(order "$round" bare portcullis); do
			out=$("$work/stream" -url "http://$(addr_of "$target")" -mode "$mode" -bytes "$STREAM_BYTES" \
				-pid "$(pid_of "$target")" -H "Cookie: $cookie")
			echo "$mode $target $round $out" | tee -a "$work/results"
		done
	done
done

if [ "$IDLE_CONNS" -gt 0 ]; then
	echo
	echo "== $IDLE_CONNS idle keep-alive connections"
	cookie=$(session)
	for target in bare portcullis; do
		out=$("$work/idle" -addr "$(addr_of "$target")" -path /tasks -n "$IDLE_CONNS" -pid "$(pid_of "$target")" -H "Cookie: $cookie")
		echo "idle $target 1 $out" | tee -a "$work/results"
	done
fi

if [ "$SESSIONS" = oidc ] && [ "$LOGIN_DURATION" != 0 ]; then
	echo
	echo "== logins at the OIDC provider ($LOGIN_CONNS browsers, $LOGIN_DURATION)"
	before=$(cputicks "$PROXY_PID")
	idp_before=$(cputicks "$OIDC_PID")
	out=$("$work/login" -proxy "http://$PROXY_ADDR" -idp bench -c "$LOGIN_CONNS" -d "$LOGIN_DURATION")
	after=$(cputicks "$PROXY_PID")
	idp_after=$(cputicks "$OIDC_PID")
	n=${out#logins=}
	n=${n%% *}
	echo "logins portcullis 1 $out cpu_ms=$(awk -v t=$((after - before)) -v n="$n" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t * 1000 / hz / n }') idp_cpu_ms=$(awk -v t=$((idp_after - idp_before)) -v n="$n" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t * 1000 / hz / n }')" | tee -a "$work/results"
fi

echo
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "portcullis wrote $(wc -l <"$work/portcullis.log") log lines ($(grep -c '"log":"access"' "$work/portcullis.log" || true) access lines)"
[ -n "$OAUTH2_PROXY" ] && echo "oauth2-proxy wrote $(wc -l <"$work/oauth2-proxy.log") log lines ($(grep -c ' GET .* HTTP/1\.1 ' "$work/oauth2-proxy.log" || true) GET request lines)"
echo

awk "$awk_median"'
function m(s, p, k) { return median(v[s, p, k]) }
function mark(ok) { return ok ? "ok" : "MISSED" }
# pr(s, k[, p]): the median over rounds of p/bare in the same round (p is
# portcullis unless given): each pair ran close together, so drift in the
# load of the machine cancels out.
function pr(s, k, p) { return median(ratios(s, k, p)) }
# spr(s, k[, p]): the middle half of those per-round ratios.
function spr(s, k, p) { return "middle half of the rounds " spread(ratios(s, k, p)) }
function ratios(s, k, p,   list, r) {
	if (p == "") p = "portcullis"
	list = ""
	for (r = 1; r <= rounds[s]; r++)
		if (x[s, "bare", r, k] > 0 && (s, p, r, k) in x) list = list " " x[s, p, r, k] / x[s, "bare", r, k]
	return list
}
{
	for (i = 4; i <= NF; i++) { split($i, kv, "="); v[$1, $2, kv[1]] = v[$1, $2, kv[1]] " " kv[2]; x[$1, $2, $3, kv[1]] = kv[2] }
	seen[$1] = 1
	if ($2 == "redis") seen_redis = 1
	if ($2 == "oauth2-proxy") seen_oauth2 = 1
	if ($3 > rounds[$1]) rounds[$1] = $3
}
END {
	printf "%-9s %-11s %10s %9s %9s %12s %14s\n", "scenario", "proxy", "req/s", "p50 ms", "p99 ms", "CPU/request", "upstream CPU"
	for (si = 1; si <= 2; si++) {
		s = si == 1 ? "auth" : "bypass"
		if (!seen[s]) continue
		for (t = 0; t < 2; t++) {
			p = t ? "portcullis" : "bare"
			printf "%-9s %-11s %10.0f %9.3f %9.3f %9.0f µs %11.0f µs\n", s, p, m(s, p, "rps"), m(s, p, "p50_ms"), m(s, p, "p99_ms"), m(s, p, "cpu_us"), m(s, p, "upstream_cpu_us")
		}
		if (s == "auth" && seen_redis)
			printf "%-9s %-11s %10.0f %9.3f %9.3f %9.0f µs %11.0f µs  (+ %.0f µs in redis-server)\n", s, "redis", m(s, "redis", "rps"), m(s, "redis", "p50_ms"), m(s, "redis", "p99_ms"), m(s, "redis", "cpu_us"), m(s, "redis", "upstream_cpu_us"), m(s, "redis", "redis_cpu_us")
		if (seen_oauth2) {
			p = "oauth2-proxy"
			printf "%-9s %-12s %9.0f %9.3f %9.3f %9.0f µs %11.0f µs\n", s, p, m(s, p, "rps"), m(s, p, "p50_ms"), m(s, p, "p99_ms"), m(s, p, "cpu_us"), m(s, p, "upstream_cpu_us")
		}
	}
	printf "\n%-9s %-11s %10s %16s\n", "stream", "proxy", "MiB/s", "RSS growth MiB"
	for (si = 1; si <= 2; si++) {
		s = si == 1 ? "upload" : "download"
		if (!seen[s]) continue
		for (t = 0; t < 2; t++) {
			p = t ? "portcullis" : "bare"
			printf "%-9s %-11s %10.1f %16.1f\n", s, p, m(s, p, "mib_s"), m(s, p, "rss_growth_mib")
		}
	}
	if (seen["idle"]) {
		printf "\n%-9s %-11s %10s %16s\n", "idle", "proxy", "conns", "RSS KiB/conn"
		for (t = 0; t < 2; t++) {
			p = t ? "portcullis" : "bare"
			printf "%-9s %-11s %10d %16.1f\n", "idle", p, m("idle", p, "conns"), m("idle", p, "kib_per_conn")
		}
	}

	print "\nportcullis / bare (median of the per-round ratios)    ratio   target"
	r = pr("auth", "rps")
	printf "%-48s %6.2f   >= 0.90 %-6s (%s)\n", "authenticated GET, req/s", r, mark(r >= 0.9), spr("auth", "rps")
	r = pr("auth", "p99_ms")
	printf "%-48s %6.2f   <= 1.20 %-6s (%s)\n", "authenticated GET, p99 latency", r, mark(r <= 1.2), spr("auth", "p99_ms")
	r = pr("bypass", "rps")
	printf "%-48s %6.2f   >= 0.95 %-6s (%s)\n", "bypassed GET (Basic auth to /api/), req/s", r, mark(r >= 0.95), spr("bypass", "rps")
	if (seen_redis) {
		printf "%-48s %6.2f   (session.store redis; cookie store %.2f)\n", "authenticated GET, Redis store, req/s", pr("auth", "rps", "redis"), pr("auth", "rps")
		printf "%-48s %6.2f   (session.store redis; cookie store %.2f)\n", "authenticated GET, Redis store, p99 latency", pr("auth", "p99_ms", "redis"), pr("auth", "p99_ms")
	}
	printf "%-48s %6.2f   (%s)\n", "authenticated GET, proxy CPU per request", pr("auth", "cpu_us"), spr("auth", "cpu_us")
	printf "%-48s %6.2f   (%s)\n", "bypassed GET, proxy CPU per request", pr("bypass", "cpu_us"), spr("bypass", "cpu_us")
	printf "%-48s %6.2f   (%s)\n", "bypassed GET, upstream CPU per request", pr("bypass", "upstream_cpu_us"), spr("bypass", "upstream_cpu_us")
	if (seen_oauth2) {
		# The same ratios for oauth2-proxy, each next to portcullis/bare.
		p = "oauth2-proxy"
		print "\noauth2-proxy / bare (median of the per-round ratios)  ratio   portcullis / bare"
		printf "%-48s %6.2f   %6.2f   (%s)\n", "authenticated GET, req/s", pr("auth", "rps", p), pr("auth", "rps"), spr("auth", "rps", p)
		printf "%-48s %6.2f   %6.2f   (%s)\n", "authenticated GET, p99 latency", pr("auth", "p99_ms", p), pr("auth", "p99_ms"), spr("auth", "p99_ms", p)
		printf "%-48s %6.2f   %6.2f   (%s)\n", "bypassed GET (/api/ by --skip-auth-route), req/s", pr("bypass", "rps", p), pr("bypass", "rps"), spr("bypass", "rps", p)
		printf "%-48s %6.2f   %6.2f   (%s)\n", "bypassed GET, p99 latency", pr("bypass", "p99_ms", p), pr("bypass", "p99_ms"), spr("bypass", "p99_ms", p)
		printf "%-48s %6.2f   %6.2f   (%s)\n", "authenticated GET, proxy CPU per request", pr("auth", "cpu_us", p), pr("auth", "cpu_us"), spr("auth", "cpu_us", p)
		printf "%-48s %6.2f   %6.2f   (%s)\n", "bypassed GET, proxy CPU per request", pr("bypass", "cpu_us", p), pr("bypass", "cpu_us"), spr("bypass", "cpu_us", p)
	}
	if (seen["upload"]) {
		r = pr("upload", "mib_s")
		printf "%-48s %6.2f   >= 0.90 %-6s (%s)\n", "1 GiB upload, MiB/s", r, mark(r >= 0.9), spr("upload", "mib_s")
		r = pr("download", "mib_s")
		printf "%-48s %6.2f   >= 0.90 %-6s (%s)\n", "1 GiB download, MiB/s", r, mark(r >= 0.9), spr("download", "mib_s")
		g = m("upload", "portcullis", "rss_growth_mib"); g2 = m("download", "portcullis", "rss_growth_mib")
		if (g2 > g) g = g2
		printf "%-48s %6.1f   < 32 MiB %s\n", "portcullis RSS growth while streaming, MiB", g, mark(g < 32)
	}
	if (seen["idle"]) {
		a = m("idle", "portcullis", "kib_per_conn"); b = m("idle", "bare", "kib_per_conn")
		printf "%-48s %6.2f   (%.1f KiB vs %.1f KiB per connection)\n", "idle keep-alive connection, RSS per connection", a / b, a, b
	}
	if (seen["logins"]) {
		printf "%-48s %6.1f   (p50 %.0f ms; portcullis CPU %.2f ms and IdP CPU %.2f ms per login)\n", "logins per second (full OIDC logins)", m("logins", "portcullis", "logins_s"), m("logins", "portcullis", "p50_ms"), m("logins", "portcullis", "cpu_ms"), m("logins", "portcullis", "idp_cpu_ms")
	}
}' "$work/results"

if [ "$PROFILE" = 1 ]; then
	# CPU profiles of both proxies under the same auth load, one after the
	# other: the difference between them is portcullis's own cost.
	echo
	echo "profiling both proxies under the ${PROFILE_SCENARIO:-auth} load..."
	out=${PROFILE_OUT:-/tmp/portcullis-cpu.pprof}
	kill "$PROXY_PID" "$BARE_PID"
	wait "$PROXY_PID" "$BARE_PID" 2>/dev/null || true
	start profproxy "$work/profproxy" -config "$work/portcullis.yaml" -pprof "$PPROF_ADDR"
	start bareproxy "$work/bareproxy" -listen "$BARE_ADDR" -upstream "http://$UPSTREAM_ADDR" -pprof "127.0.0.1:$((PORT_BASE + 7))"
	wait_up "http://$ADMIN_ADDR/readyz"
	wait_up "http://$BARE_ADDR/"
	cookie=$(session)
	for target in bare portcullis; do
		pprof_addr=$PPROF_ADDR
		[ "$target" = bare ] && pprof_addr=127.0.0.1:$((PORT_BASE + 7))
		if [ "${PROFILE_SCENARIO:-auth}" = bypass ]; then
			DURATION=12s drive "http://$(addr_of "$target")/api/tasks" "Authorization: Basic YTpi" >"$work/$target.load" &
		else
			DURATION=12s drive "http://$(addr_of "$target")/tasks" "Cookie: $cookie" >"$work/$target.load" &
		fi
		loadpid=$!
		sleep 1
		curl -s -o "$work/$target.pprof" "http://$pprof_addr/debug/pprof/profile?seconds=10"
		wait "$loadpid"
	done
	cp "$work/portcullis.pprof" "$out"
	cp "$work/bare.pprof" "${out%.pprof}-bare.pprof"
	cp "$work/profproxy" "$out.bin"
	cp "$work/bareproxy" "${out%.pprof}-bare.pprof.bin"
	for target in bare portcullis; do
		echo
		echo "--- $target under load: $(cat "$work/$target.load")"
		go tool pprof -top -cum -nodecount=60 "$work/$target.pprof" 2>/dev/null | sed -n '4,5p;7,$p'
	done
	echo "profiles saved to $out and ${out%.pprof}-bare.pprof (binaries: .bin next to them)"
fi

# Shell functions shared by the benchmark scripts (run.sh, ab.sh); sourced,
# not run. They use $work (a temporary directory the script owns) and the
# pids array, which cleanup kills.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# install_deb COMMAND PACKAGE: the Debian package that has COMMAND, if it is
# missing (the benchmarks are not part of the tests, which install their own).
install_deb() {
	command -v "$1" >/dev/null && return 0
	echo "installing $2..."
	{ as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$2"; } >/dev/null 2>&1
}

pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$work"
}

start() { # name, command... (the pid is left in $started)
	local name=$1
	shift
	"$@" >"$work/$name.log" 2>&1 &
	started=$!
	pids+=("$started")
}

wait_up() { # url
	for _ in $(seq 200); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
		sleep 0.1
	done
	echo "not up: $1" >&2
	tail -n 20 "$work"/*.log >&2
	exit 1
}

# start_oidc PORT PROXY_ADDR...: test/oidc's provider (npm ci first if
# need be) on PORT, with each proxy's callback as a redirect URI, once it
# answers (its pid is left in $started). An argument that is a URL
# (http://...) is a redirect URI as it is: another proxy's callback.
start_oidc() {
	local port=$1 uris=() a
	shift
	for a in "$@"; do
		case $a in
		*://*) uris+=(--redirect-uri "$a") ;;
		*) uris+=(--redirect-uri "http://$a/.portcullis/oidc/bench/callback") ;;
		esac
	done
	if [ ! -d test/oidc/node_modules/oidc-provider ]; then
		echo "npm ci in test/oidc..."
		(cd test/oidc && npm ci --no-audit --no-fund --loglevel=error)
	fi
	start oidc node test/oidc/provider.mjs --port "$port" "${uris[@]}"
	local pid=$started
	wait_up "http://127.0.0.1:$port/.well-known/openid-configuration"
	started=$pid
}

# cpu_us PID: the CPU time of a process so far, in µs, from the scheduler's
# per-thread accounting (finer than /proc/PID/stat's clock ticks).
cpu_us() {
	cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ns += $1} END {printf "%d\n", ns / 1000}'
}

# awk_median defines, for awk programs, median(list), the median of the
# numbers in a space-separated list, and spread(list), its middle half as
# "q1-q3" (the medians of the lower and the upper half), so that a ratio is
# printed with how much the rounds behind it agreed.
awk_median='
function sorted(list, a,   n, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n
}
function mid(a, from, to,   n) {
	n = to - from + 1
	return n % 2 ? a[from + (n - 1) / 2] : (a[from + n / 2 - 1] + a[from + n / 2]) / 2
}
function median(list,   a, n) {
	n = sorted(list, a)
	return mid(a, 1, n)
}
function spread(list,   a, n) {
	n = sorted(list, a)
	if (n < 4) return ""
	return sprintf("%.2f-%.2f", mid(a, 1, int(n / 2)), mid(a, n - int(n / 2) + 1, n))
}
'

# bench_config LISTEN ADMIN_LISTEN [SESSION_LINE...]: the benchmark's
# portcullis config on stdout (CVAT's: an OIDC IdP, the four roles, X-Email
# and X-Groups, and the API bypass rule). Uses UPSTREAM_ADDR, SESSION_KEY and
# OIDC_PORT.
bench_config() {
	local listen=$1 admin=$2
	shift 2
	cat <<CONFIG
server:
  listen: "$listen"
  admin_listen: "$admin"
  public_url: "http://$listen"
upstream:
  url: "http://$UPSTREAM_ADDR"
session:
  keys: ["$SESSION_KEY"]
CONFIG
	for line in "$@"; do
		echo "  $line"
	done
	cat <<CONFIG
sso:
  identity_providers:
    - id: bench
      protocol: OIDC
      server_url: "http://127.0.0.1:$OIDC_PORT"
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
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
CONFIG
}

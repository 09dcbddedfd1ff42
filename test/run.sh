#!/usr/bin/env bash
# The one test command (the README's and CI's): installs what the tests need
# on a fresh Debian machine that has only Go, Node and gcc, then runs them all.
#   Debian packages: chromium (browser tests of the login pages and the demo),
#                    slapd and ldap-utils (the OpenLDAP directory of the LDAP tests),
#                    389-ds-base (the 389 Directory Server of test/dsserver and
#                    test/e2e's TestLDAP389DirectoryServer),
#                    redis-server (the Redis session store and the replica tests),
#                    nginx-light, haproxy, caddy and apache2-bin (the front
#                    proxies of test/e2e's TestFrontProxy* tests: TLS, HTTP/2,
#                    WebSocket, cookie sizes; each runs from its own config)
#                    simplesamlphp, php8.2-cli and php8.2-xml (the SimpleSAMLphp
#                    IdP of test/sspserver and test/e2e's
#                    TestSAMLSimpleSAMLphpLogsIn, run with php -S; its
#                    mbstring use is polyfilled, php8.2-mbstring not needed)
#                    python3-django, gunicorn and python3-uvicorn (CVAT's
#                    Python stack, Django under WSGI and ASGI, behind the
#                    proxy in proxy's TestDjangoUpstream; about 10 MB),
#                    python3-djangorestframework (CVAT's REST framework, its
#                    sign-in and upload views in proxy's
#                    TestCVATSDKThroughProxy) and python3-urllib3 (the
#                    transport of CVAT's SDK, whose requests that test sends)
#   npm packages:    test/oidc (the oidc-provider the OIDC tests log in at),
#                    test/a11y (axe-core, the accessibility checks of the proxy's pages)
#   Go tools:        helm (deploy/: lint and render the Helm chart)
set -euo pipefail
cd "$(dirname "$0")/.."

# retry runs a download (apt, npm, go install) up to three times: a mirror or
# registry that fails once must not fail the run before a test has started.
retry() {
	local attempt
	for attempt in 1 2 3; do
		"$@" && return 0
		echo "test/run.sh: $* failed (attempt $attempt of 3)" >&2
		[ "$attempt" -eq 3 ] || sleep $((attempt * 15))
	done
	return 1
}

apt_packages=(chromium slapd ldap-utils 389-ds-base samba-ad-dc samba-ad-provision redis-server nginx-light haproxy caddy apache2-bin simplesamlphp php8.2-cli php8.2-xml python3-django gunicorn python3-uvicorn python3-djangorestframework python3-urllib3)
missing=()
for pkg in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "test/run.sh: installing ${missing[*]}"
	# The tests run their own servers on loopback ports; the packages' own
	# services (nginx's and Caddy's default sites on port 80, slapd, redis-server) are not
	# wanted, and where no init system runs, starting one can fail the
	# install. A policy-rc.d that refuses every start, as containers have,
	# for the install only, unless the machine has one already.
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		trap '$sudo rm -f "$policy"' EXIT
		printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
		$sudo chmod 755 "$policy"
	fi
	retry $sudo apt-get update -qq
	retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [ "$(trap -p EXIT)" ]; then
		$sudo rm -f "$policy"
		trap - EXIT
	fi
fi

if [ ! -d test/oidc/node_modules/oidc-provider ] || [ test/oidc/package-lock.json -nt test/oidc/node_modules/.package-lock.json ]; then
	echo "test/run.sh: npm ci in test/oidc"
	(cd test/oidc && retry npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -d test/a11y/node_modules/axe-core ] || [ test/a11y/package-lock.json -nt test/a11y/node_modules/.package-lock.json ]; then
	echo "test/run.sh: npm ci in test/a11y"
	(cd test/a11y && retry npm ci --no-audit --no-fund --loglevel=error)
fi

# helm, for deploy/helm_test.go (helm lint and helm template of charts/portcullis;
# no cluster needed). Built from source once (a minute or more, cold) and kept
# in $(go env GOPATH)/bin, where the test looks for it.
helm_version=v3.22.0
if ! command -v helm >/dev/null && [ ! -x "$(go env GOPATH)/bin/helm" ]; then
	echo "test/run.sh: go install helm.sh/helm/v3/cmd/helm@$helm_version"
	retry go install "helm.sh/helm/v3/cmd/helm@$helm_version"
fi

echo "test/run.sh: go vet"
go vet ./...
echo "test/run.sh: go test"
go test -count=1 -timeout 15m "$@" ./...

# The packages that share state between requests, reloads and background
# work (sessions, marks, limits, certificates, providers), again under the
# race detector: some of their tests only mean something there (about 40 s
# here once built).
echo "test/run.sh: go test -race"
go test -race -count=1 -timeout 15m "$@" ./proxy/... ./rules ./idp

# Each fuzz target for a short fixed budget, counted in executions (about
# 10 s each on a 2-CPU machine, about 125 s in all): a duration budget (-fuzztime
# 10s) sometimes fails with "context deadline exceeded" and no crasher, a race
# in Go's fuzz coordinator (go.dev/issue/75804, unfixed in Go 1.26). A crasher
# fails the run and is written to the package's testdata/fuzz, where it stays
# as a regression seed once committed. PORTCULLIS_FUZZTIME (a count such as
# 100000x, or a duration) replaces every target's budget. A fourth field
# bounds the minimizing of each new input (-fuzzminimizetime, default 60 s,
# not counted in the budget): FuzzSAMLResponse's inputs are 8 KB responses
# at up to 3 ms an execution, and minimizing one took the whole minute;
# FuzzSAMLLogout's (3 KB logout messages) stalled its runs as long, and so
# did FuzzServeHTTP's: its coverage counts the goroutines of a real server,
# transport and upstream, which a minimized input seldom repeats exactly.
# FuzzServeHTTP starts a redis-server and a slapd (once a process) for two of
# its four configurations and runs its seeds in each: 12000 executions took
# 9.7 s from an empty fuzz cache with three.
# FuzzUnanchoredRegexWarningHolds: 30000 executions took 5 s from an empty
# fuzz cache.
# FuzzExplainAgreesWithServe serves three rule sets on listeners of their
# own and asks explain and each about the same requests: 3000 executions
# took 7.8 s from an empty fuzz cache (its seeds run in all three).
# FuzzKeepFromSharedCaches checks the Cache-Control given to signed-in
# answers against RFC 9111's grammar: 20000 executions, about 7 s.
# FuzzChunksReassemble (a chunked session cookie found exactly when all its
# chunks are there) and FuzzFillFilter (no username or DN changes what an
# LDAP filter asks): about 1,800 and 2,400 executions a second here.
# FuzzLoginEndpoints has about 7 s (1 s of it starting its oidc-provider,
# SAML IdP and slapd, once a process): each execution starts the logins its
# input asks for and may reach the OIDC provider's token endpoint or bind at
# slapd, about 1 ms, and minimizing an input stalled its runs for 10 s at a
# time. 3000 executions took 4.2 s from an empty fuzz cache with slapd (4.3 s
# before it).
for target in rules:FuzzCleanPath:70000x rules:FuzzMatch:60000x rules:FuzzValueMatcher:50000x rules:FuzzShadowWarningsHold:50000x \
	rules:FuzzUnanchoredRegexWarningHolds:30000x proxy:FuzzSafeRedirect:10000x proxy:FuzzParseConfig:2000x proxy:FuzzServeHTTP:12000x:100x proxy:FuzzLoginEndpoints:3000x:100x \
	proxy:FuzzExplainAgreesWithServe:3000x:100x proxy:FuzzKeepFromSharedCaches:20000x \
	proxy/session:FuzzLoad:35000x proxy/session:FuzzChunksReassemble:12000x idp:FuzzFillFilter:15000x:100x \
	proxy/jsonlog:FuzzSameLinesAsSlog:40000x idp:FuzzSAMLResponse:6000x:200x idp:FuzzSAMLLogout:15000x:100x; do
	IFS=: read -r pkg fn budget minimize <<<"$target"
	budget="${PORTCULLIS_FUZZTIME:-$budget}"
	echo "test/run.sh: fuzz $fn ($budget)"
	go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$budget" ${minimize:+-fuzzminimizetime="$minimize"} "./$pkg/"
done

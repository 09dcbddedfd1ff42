# syntax=docker/dockerfile:1
# portcullis container image: a static binary on distroless/static (CA
# certificates, tzdata, /etc/passwd with the nonroot user; no shell, no package
# manager). Build it from a checkout:
#   docker build --build-arg VERSION=$(git describe --tags --always) -t portcullis:local .
# The build step is the README's local build (go build ./cmd/portcullis) with
# the release flags; deploy/docker_test.go runs that same command.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/portcullis-proxy/portcullis/proxy.version=${VERSION}" -o /out/portcullis ./cmd/portcullis

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/portcullis /usr/local/bin/portcullis
# 65532 is distroless's "nonroot"; numeric so that Kubernetes' runAsNonRoot
# can verify it without reading /etc/passwd.
USER 65532:65532
# 9772: the proxy. 9773: /healthz, /readyz and /metrics, when the config's
# server.admin_listen is ":9773" (its default, 127.0.0.1:9773, is reachable
# only from inside the container).
EXPOSE 9772 9773
# The image has no shell and no curl: `portcullis health` is its HTTP client.
# It runs inside the container, so it reaches the admin listener on the
# default 127.0.0.1:9773 as well as on ":9773", and it reads only
# server.admin_listen from the config. It asks /readyz, which waits for every
# IdP's discovery: 30 s to start before a failure counts, and a timeout above
# the command's own 3 s, so that its one-line answer lands in the health log.
# Kubernetes ignores HEALTHCHECK (the Helm chart has its own probes).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "health", "--config", "/etc/portcullis/portcullis.yaml"]
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.yaml"]

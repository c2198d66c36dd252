# Container image of one crdt-catalog node.
#
#   docker build -t crdt-catalog --build-arg VERSION=v0.1.0 .
#   head -c 32 /dev/urandom | base64 > api-token       # at least 16 characters
#   docker run -d --name catalog -v catalog-data:/data \
#     -v "$PWD/api-token:/run/secrets/crdt-catalog-token:ro" \
#     -p 127.0.0.1:8080:8080 -p 4101:4101/tcp -p 4101:4101/udp crdt-catalog
#
# Flags follow the image name (docker run ... crdt-catalog -bootstrap ADDR),
# or are set as CRDT_CATALOG_<FLAG> variables (docker run -e ...).

# Build stage: a static binary (no cgo: LevelDB and libp2p are pure Go).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION names the release in "crdt-catalog version" and /status; empty:
# the module version the go command stamps ("(devel)" without VCS data).
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/crdt-catalog ./cmd/crdt-catalog \
 && mkdir -p /out/data

# Run stage: no shell, no package manager, a non-root user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/crdt-catalog /usr/local/bin/crdt-catalog
# The data directory belongs to the non-root user; a new named volume
# takes this ownership.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME ["/data"]
# The API must be reachable through a published port, so it listens on
# every interface inside the container, and a non-loopback API requires a
# token: mount one at /run/secrets/crdt-catalog-token (or set
# CRDT_CATALOG_API_TOKEN_FILE to another path).
ENV CRDT_CATALOG_DATA=/data \
    CRDT_CATALOG_HTTP=0.0.0.0:8080 \
    CRDT_CATALOG_API_TOKEN_FILE=/run/secrets/crdt-catalog-token
# 8080: HTTP API. 4101 TCP and UDP (QUIC): libp2p, the default of -listen
# in cmd/crdt-catalog/serve.go when this file was written; if that default
# changes, change these two lines (and the run example above) with it.
EXPOSE 8080/tcp 4101/tcp 4101/udp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/crdt-catalog"]

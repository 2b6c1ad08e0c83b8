# syntax=docker/dockerfile:1
#
# edge as a container image: a static binary, run as a non-root user, allowed
# to bind ports 80 and 443 by a file capability rather than by root.
#
#   docker build -t edge .
#   docker run -d -p 443:443 -p 80:80 \
#     -v $PWD/edge.toml:/etc/edge/edge.toml:ro -v edge-state:/var/lib/edge edge
#
# The config must set state_dir = "/var/lib/edge" and keep the admin listener
# on port 9180 with loopback included ("127.0.0.1:9180", or ":9180" with an
# admin_token when Prometheus scrapes it over a container network): the
# health check calls /healthz, which needs no token.

FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/edge ./cmd/edge \
 && setcap cap_net_bind_service=+ep /out/edge \
 && getcap /out/edge | grep -q cap_net_bind_service

# Alpine rather than distroless: its busybox wget runs the health check.
FROM alpine:3.20
RUN apk add --no-cache ca-certificates tzdata \
 && addgroup -S -g 10001 edge \
 && adduser -S -D -H -u 10001 -G edge -h /var/lib/edge -s /sbin/nologin edge \
 && install -d -m 0755 /etc/edge \
 && install -d -m 0700 -o edge -g edge /var/lib/edge
# No --chown: changing the owner of a file clears its capability. BuildKit
# (the default builder since Docker 23) keeps the xattr across stages.
COPY --from=build /out/edge /usr/local/bin/edge
USER edge:edge
ENV EDGE_CONFIG=/etc/edge/edge.toml
VOLUME ["/var/lib/edge"]
EXPOSE 443 80
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9180/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/edge"]
CMD ["run", "-config", "/etc/edge/edge.toml"]

# syntax=docker/dockerfile:1
# Portico's image: the one `portico` binary on a distroless base, nothing else.
#
#   docker build -t ghcr.io/portico-dev/portico:0.1 .
#
# Both in-cluster workloads run this image. The node agent's DaemonSet runs it as user 0 with
# only NET_ADMIN (nftables, conntrack) and NET_RAW (ARP, NDP) and every other capability
# dropped; the ingress Deployment runs it as the image's nonroot user on unprivileged ports.
# The image has no shell: Kubernetes passes the flags to the binary as arguments.

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace, less what .dockerignore leaves out: Cargo.lock pins every crate
# (--locked), and .cargo/config.toml carries jemalloc's settings into the build.
COPY . .
# The registry and target folders are cache mounts so a rebuild compiles only what changed;
# a cache mount is not part of the image, hence the copy out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portico \
    && cp target/release/portico /portico

# cc: glibc and libgcc, which the binary links against; the same Debian release as the build
# stage, so the glibc it was linked against is the one it finds.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="portico" \
      org.opencontainers.image.description="Every way to expose Kubernetes workloads, in one binary" \
      org.opencontainers.image.source="https://github.com/portico-dev/portico" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /portico /usr/local/bin/portico
USER nonroot
ENTRYPOINT ["/usr/local/bin/portico"]

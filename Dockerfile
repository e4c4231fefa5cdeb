# One image with every service; choose one by command: `gateway` (default), `processor`,
# `notifier`, `dashboard` or `imager`. Each also answers `<service> healthcheck` (exit 0 when its
# own /ready says 200), the container health check without an HTTP client in the image.
#
# The base images are build arguments, so a registry mirror or local copies can stand in:
#   docker build --build-arg RUST_IMAGE=... --build-arg RUNTIME_IMAGE=... .
# REVISION (also the revision pipeline_build_info reports) and CREATED fill the OCI labels:
#   --build-arg REVISION=$(git rev-parse HEAD) --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The dependency recipe changes only when a manifest or the lock file does.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Dependencies in their own layer, cached until the recipe changes.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json -p gateway -p processor -p notifier -p imager -p dashboard
COPY . .
# The same package set as the cook above (the five services, not the test and benchmark crates),
# so every dependency is built with the same features and comes from its layer; only the
# workspace's own crates compile here. REVISION is the one pipeline_build_info reports.
ARG REVISION
ENV PIPELINE_REVISION=${REVISION:-unknown}
RUN cargo build --release --locked -p gateway -p processor -p notifier -p imager -p dashboard

FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: the system's roots for TLS to managed backends and S3. Nothing else: no shell
# tools are needed at run time, and the health check is the service binary itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --home-dir /var/lib/pipeline --no-create-home \
        --shell /usr/sbin/nologin pipeline \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/pipeline
COPY --from=builder /src/target/release/gateway /src/target/release/processor \
    /src/target/release/notifier /src/target/release/dashboard /src/target/release/imager /usr/local/bin/
# The working directory is the service user's own: the default local object store
# (data/objects under it) works as that user, and a volume mounted here starts with its owner.
WORKDIR /var/lib/pipeline
USER 10001:10001
ENV LOG_FORMAT=json
EXPOSE 8080 8081 8082 8083 8084
CMD ["gateway"]

ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.title="product-event-pipeline" \
      org.opencontainers.image.description="Product event pipeline: gateway, processor, notifier, imager and dashboard in one image; the command picks the service" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# syntax=docker/dockerfile:1
# One image with every service; choose one by command: `gateway` (default), `processor`,
# `notifier`, `dashboard` or `imager`.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The dependency recipe changes only when a manifest or the lock file does.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Dependencies in their own layer, cached until the recipe changes.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
# The same package set as the cook above (the whole workspace), so every dependency is built
# with the same features and comes from its layer; only the workspace's own crates compile here.
RUN cargo build --release --locked

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home pipeline
COPY --from=builder /src/target/release/gateway /src/target/release/processor \
    /src/target/release/notifier /src/target/release/dashboard /src/target/release/imager /usr/local/bin/
USER 10001
ENV LOG_FORMAT=json
EXPOSE 8080 8081 8082 8083 8084
CMD ["gateway"]

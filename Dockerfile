# syntax=docker/dockerfile:1
# Multi-stage build of both binaries; the runtime image has no toolchain.
# The cargo registry and the target directory are BuildKit cache mounts: they
# survive between builds, so an edit recompiles Courier's own crates, not every
# dependency. (A cache mount is not part of the image, hence the copy to /out.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin courier-api --bin courier-worker \
 && mkdir -p /out \
 && cp target/release/courier-api target/release/courier-worker /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/courier-api /out/courier-worker /usr/local/bin/
USER nobody
# courier-api on 8080, courier-worker's /metrics on 9610.
EXPOSE 8080 9610
CMD ["courier-api"]

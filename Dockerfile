# Multi-stage build of both binaries; the runtime image has no toolchain.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin courier-api --bin courier-worker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/courier-api /src/target/release/courier-worker /usr/local/bin/
USER nobody
EXPOSE 8080 9090
CMD ["courier-api"]

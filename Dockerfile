# pgsluice container image.
#   docker build -t pgsluice .
#   docker run -p 6432:6432 -v "$PWD/pgsluice.yaml:/etc/pgsluice/pgsluice.yaml:ro" pgsluice
# The config must listen on 0.0.0.0:6432 (or [::]:6432) to be reachable from outside.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgsluice \
    && install -m 0755 target/release/pgsluice /usr/local/bin/pgsluice

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system pgsluice \
    && useradd --system --gid pgsluice --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pgsluice \
    && mkdir -p /etc/pgsluice
COPY --from=builder /usr/local/bin/pgsluice /usr/local/bin/pgsluice
USER pgsluice
EXPOSE 6432
STOPSIGNAL SIGTERM
ENTRYPOINT ["pgsluice"]
CMD ["run", "-c", "/etc/pgsluice/pgsluice.yaml"]

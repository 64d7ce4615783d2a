# panther-triage: a multi-stage build. The runtime image holds the binary, CA certificates and nothing
# else; it runs as a non-root user with its state on a volume.
#
#   docker build -t panther-triage .
#   docker run -v pt-state:/var/lib/panther-triage -v $PWD/config.toml:/etc/panther-triage/config.toml:ro \
#     -e PANTHER_TRIAGE__PANTHER__API_KEY=... panther-triage
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY fixtures ./fixtures
COPY schema ./schema
RUN cargo build --release --locked --bin panther-triage

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/panther-triage --shell /usr/sbin/nologin panther-triage \
 && mkdir -p /var/lib/panther-triage /etc/panther-triage \
 && chown panther-triage:panther-triage /var/lib/panther-triage
COPY --from=build /src/target/release/panther-triage /usr/local/bin/panther-triage
COPY config/example.toml /etc/panther-triage/example.toml
USER 10001:10001
VOLUME ["/var/lib/panther-triage"]
ENV PANTHER_TRIAGE_CONFIG=/etc/panther-triage/config.toml
# The configuration is checked at every start; a bad one exits 2 with every problem listed.
# With [server] listen = "0.0.0.0:9464" in the configuration (and the port published for Prometheus),
# Docker's health check asks the daemon's /readyz: ready when the ledger is open, the tables are
# loaded and the last poll succeeded within three intervals.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/panther-triage", "check-health", "--url", "http://127.0.0.1:9464/readyz"]
ENTRYPOINT ["/usr/local/bin/panther-triage"]
CMD ["run"]

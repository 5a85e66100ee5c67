# Multi-stage build: a full Rust toolchain builds the binary, a distroless
# image runs it as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
# Dependencies first, so a source change does not rebuild them. The
# manifest names every bench, and the workspace the test kit, so each needs a
# file to load; the binary depends on neither, so stubs do. The kit's manifest
# and stub stay for the build below: cargo loads every workspace member.
COPY Cargo.toml Cargo.lock ./
COPY tests/kit/Cargo.toml tests/kit/
RUN mkdir -p src benches tests/kit/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in token_endpoint upstream_proxy login import backfill_rate; do echo 'fn main() {}' > benches/$b.rs; done \
    && touch tests/kit/src/lib.rs \
    && cargo build --release --locked --bin switchyard \
    && rm -rf src benches
COPY src src
COPY templates templates
COPY providers providers
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin switchyard && mkdir /data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
# The embedded default keeps its SQLite file in /data: mount a volume there.
# The directory belongs to the non-root user so a fresh volume is writable.
COPY --from=build --chown=nonroot:nonroot /data /data
WORKDIR /data
VOLUME ["/data"]
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_DATABASE_URL=sqlite:///data/switchyard.db
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve"]

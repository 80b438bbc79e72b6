# Weft: one binary (controller, webhook and the one-shot commands), with the tools it renders with.
# Build: docker build -t <your-registry>/weft/weft:0.1.0 .

FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin weft

# kustomize and helm, built from their Go modules at the versions the tests use.
FROM golang:1.25-bookworm AS tools
RUN GOBIN=/out go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.1 \
 && GOBIN=/out go install helm.sh/helm/v3/cmd/helm@v3.22.0

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client gnupg \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/weft /usr/local/bin/weft
COPY --from=tools /out/kustomize /out/helm /usr/local/bin/
# The chart runs it as this user, with a read-only root filesystem and writable /tmp and cache volumes.
USER 65532:65532
ENV HOME=/tmp
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["controller"]

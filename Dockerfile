# syntax=docker/dockerfile:1
#
# The billing image: `billing-service` (the entrypoint; `serve` by default, `migrate`, `events ...`)
# and `stripe-setup`, on distroless (glibc, CA certificates, no shell), as a non-root user.
# The SQL migrations are compiled into billing-service, so the image carries no other files.
#
#   docker build -t billing .                      # compiles in the `build` stage (what CI does)
#   docker run --rm billing --help
#   docker run --rm --entrypoint stripe-setup billing --help
#   docker build --target local -t billing-local .  # the local-development image (compose.yaml)
#
# BINARIES=prebuilt copies target/release/{billing-service,stripe-setup} from the build context
# instead of compiling; they must have been built against Debian 12's glibc (as the `build` stage
# does), e.g. on a Debian 12 host. See the README ("Building the image without Docker").
#
# The base images are pinned by digest, `image:tag@sha256:...`: the tag says what it is, the digest
# is what is pulled, so a tag pushed again (by accident or by an attacker) cannot change what we
# build on. Dependabot (.github/dependabot.yml) proposes a new digest each week the tag's image
# has been rebuilt (Debian security fixes); kubernetes/tests fails on a FROM without a digest. The
# FROM lines name the images literally because Dependabot does not read ARGs in FROM. The Rust
# version moves by hand, with RUST_TOOLCHAIN in .github/workflows/ci.yml: change tag and digest
# together (`docker buildx imagetools inspect rust:<version>-slim-bookworm` shows the digest).

# `distroless` is the stage below; `--build-arg RUNTIME_IMAGE=<image>` swaps the base.
ARG RUNTIME_IMAGE=distroless
ARG BINARIES=source

# ---- build. Not cargo-chef: its dependency layer would stub out the patched crate in vendor/
# (a `[patch]` path dependency, see vendor/README.md; cargo-chef issue #64). BuildKit cache mounts
# keep the registry and the build directory between builds on the same builder instead.
# Only the two shipped packages are built; the test crates are not needed in an image.
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p billing-service -p stripe-setup \
    && install -D -m 0755 target/release/billing-service /out/billing-service \
    && install -D -m 0755 target/release/stripe-setup /out/stripe-setup

FROM scratch AS binaries-source
COPY --from=build /out/ /

FROM scratch AS binaries-prebuilt
COPY target/release/billing-service target/release/stripe-setup /

# A stage chosen by BINARIES (hadolint takes it for an untagged image).
# hadolint ignore=DL3006
FROM binaries-${BINARIES} AS binaries

# ---- runtime: glibc, CA certificates and the `nonroot` user, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f AS distroless

# ---- local (`docker build --target local`): billing-local (the local Stripe, or everything in one
# process), billing-service and stripe-setup on the same runtime, for compose.yaml. Never
# deployed; `docker build .` does not build these two stages (BuildKit builds only what the
# target needs, and the default target is the last stage). Always compiled here, whatever
# BINARIES says; the cache mounts are the `build` stage's, so what it compiled is reused.
FROM build AS build-local
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p billing-local \
    && install -D -m 0755 target/release/billing-local /out/billing-local

FROM distroless AS local
COPY --from=build-local /out/billing-local /out/billing-service /out/stripe-setup /usr/local/bin/
USER 65532:65532
ENV SERVER_HOST=0.0.0.0 \
    SERVER_PORT=8080
# The service, and the local Stripe (`billing-local stripe --listen 0.0.0.0:12111`).
EXPOSE 8080 12111
ENTRYPOINT ["/usr/local/bin/billing-local"]

# ---- the default target: the image that is deployed.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="billing" \
      org.opencontainers.image.description="Stripe billing microservice: checkout, products, signed webhooks" \
      org.opencontainers.image.licenses="MIT"
COPY --from=binaries /billing-service /stripe-setup /usr/local/bin/
# The distroless `nonroot` user, numeric so Kubernetes can enforce runAsNonRoot.
USER 65532:65532
# Every interface: the pod's address is where the Service sends traffic (the binary alone
# listens on loopback only).
ENV SERVER_HOST=0.0.0.0 \
    SERVER_PORT=8080 \
    LOG_FORMAT=json
EXPOSE 8080
# No HEALTHCHECK: there is no shell or curl here; Kubernetes probes /status/alive and /status/ready.
ENTRYPOINT ["/usr/local/bin/billing-service"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# The project's images, for those who have Docker: the same images as `make image`,
# which builds them without Docker. internal/image/spec.go is the spec of both;
# test/image checks that every final stage here agrees with it (binaries and their
# paths, ENTRYPOINT, USER, ENV, EXPOSE, LABEL).
#
#   docker build -t ghcr.io/queuejob/queuejob-operator:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) .
#   docker buildx build --platform linux/amd64,linux/arm64 --target pi \
#     -t ghcr.io/queuejob/pi:0.1.0 .
#
# Targets: queuejob-operator (the manager; the default, so last), queuejob-worker, pi,
# job-wq-1, job-wq-2. Static binaries (CGO_ENABLED=0) on an empty base, run as
# 65532:65532. The Go stages run on the build machine and cross-compile.

ARG GO_VERSION=1.26.8
# The chart's appVersion and the Makefile's VERSION.
ARG VERSION=0.1.0
ARG REVISION=unknown

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS source
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION
ARG REVISION
ENV CGO_ENABLED=0 \
    LDFLAGS="-s -w -X github.com/queuejob/queuejob-operator/pkg/version.Version=${VERSION} -X github.com/queuejob/queuejob-operator/pkg/version.Revision=${REVISION}"

# One stage per binary, so that a target compiles only what it holds.
FROM source AS build-manager
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o /out/ ./cmd

FROM source AS build-queuejob-worker
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o /out/ ./cmd/queuejob-worker

FROM source AS build-pi
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o /out/ ./examples/pi

FROM source AS build-cat
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o /out/ ./examples/job-wq-1/cat

FROM source AS build-job-wq-2
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o /out/ ./examples/job-wq-2

FROM scratch AS queuejob-worker
ARG VERSION
ARG REVISION
COPY --from=build-queuejob-worker /out/queuejob-worker /usr/local/bin/queuejob-worker
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/queuejob-worker"]
LABEL org.opencontainers.image.source="https://github.com/queuejob/queuejob-operator" \
      org.opencontainers.image.title="queuejob-worker" \
      org.opencontainers.image.description="queuejob-worker runs a command once per item of a QueueJob's queue." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

FROM scratch AS pi
ARG VERSION
ARG REVISION
COPY --from=build-pi /out/pi /usr/local/bin/pi
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/pi"]
LABEL org.opencontainers.image.source="https://github.com/queuejob/queuejob-operator" \
      org.opencontainers.image.title="pi" \
      org.opencontainers.image.description="The pi example's worker: prints pi to --digits digits." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# The sample QueueJob's command: ["queuejob-worker", "--", "cat"] finds both on the PATH.
FROM scratch AS job-wq-1
ARG VERSION
ARG REVISION
COPY --from=build-queuejob-worker /out/queuejob-worker /usr/local/bin/queuejob-worker
COPY --from=build-cat /out/cat /usr/local/bin/cat
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/queuejob-worker", "--", "cat"]
LABEL org.opencontainers.image.source="https://github.com/queuejob/queuejob-operator" \
      org.opencontainers.image.title="job-wq-1" \
      org.opencontainers.image.description="The job-wq-1 example's worker: queuejob-worker -- cat, one message a pod." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

FROM scratch AS job-wq-2
ARG VERSION
ARG REVISION
COPY --from=build-job-wq-2 /out/job-wq-2 /usr/local/bin/job-wq-2
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/job-wq-2"]
LABEL org.opencontainers.image.source="https://github.com/queuejob/queuejob-operator" \
      org.opencontainers.image.title="job-wq-2" \
      org.opencontainers.image.description="The job-wq-2 example's worker: takes items from Redis until the queue is empty." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# The manager: /manager is what the chart's and config/manager's Deployments run.
# Ports: metrics (8080 plain, 8443 HTTPS), health probes (8081).
FROM scratch AS queuejob-operator
ARG VERSION
ARG REVISION
COPY --from=build-manager /out/cmd /manager
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /
EXPOSE 8080/tcp 8081/tcp 8443/tcp
ENTRYPOINT ["/manager"]
LABEL org.opencontainers.image.source="https://github.com/queuejob/queuejob-operator" \
      org.opencontainers.image.title="queuejob-operator" \
      org.opencontainers.image.description="The queuejob-operator controller manager." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

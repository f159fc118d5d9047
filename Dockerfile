# One image for every Switchboard process; docker-compose.yml picks the role with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHBOARD_DATA_DIR=/var/lib/switchboard

# A non-root user, and a data directory it owns for beat's schedule file.
RUN useradd --system --uid 10001 --home-dir /var/lib/switchboard --create-home switchboard

# The source is only needed to build the wheel; the installed package is self-contained
# (migrations and generated protobuf code included), so the copy is removed afterwards.
COPY . /src
RUN pip install /src && rm -rf /src

USER switchboard
WORKDIR /var/lib/switchboard
ENTRYPOINT ["switchboard"]
CMD ["--help"]

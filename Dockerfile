# syntax=docker/dockerfile:1
#
# PledgeWatch application image. One image runs every process; docker-compose.yml picks it with
# the command: `pledgewatch migrate | gateway | serve | sim | devices add ...`.
#
#   docker build -t pledgewatch .
#   docker run --rm pledgewatch --help

# --- dashboard: the browser libraries from the npm registry (api/dashboard/package-lock.json) ---
# No install scripts run; the wheel takes from node_modules only the files the app serves
# (pyproject.toml, [tool.setuptools.package-data]).
FROM node:20-slim AS dashboard

WORKDIR /src/api/dashboard
COPY api/dashboard/package.json api/dashboard/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# --- build: install the project and its dependencies into a virtualenv -----------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.md is named by pyproject.toml (`readme`), so the build needs it.
COPY pyproject.toml README.md ./
# The packages of the wheel (pyproject.toml, [tool.setuptools.packages.find]); bench/ and tests/
# are tooling of the checkout and stay out.
COPY api/ api/
COPY gateway/ gateway/
COPY telemetry/ telemetry/
COPY lending/ lending/
COPY notifier/ notifier/
COPY schema/ schema/
COPY firmware_sim/ firmware_sim/
COPY pledgewatch/ pledgewatch/
COPY --from=dashboard /src/api/dashboard/node_modules/ api/dashboard/node_modules/
# The check runs isolated (-I), so it imports the installed package, not the sources in /src.
RUN pip install . \
 && python -I -c "from api.dashboard import swagger_ui_available; from api.app import DASHBOARD_DIR; \
assert swagger_ui_available(DASHBOARD_DIR) and (DASHBOARD_DIR / 'static' / 'index.html').is_file(), \
'the dashboard assets are missing from the installed package'"

# --- runtime: the virtualenv, a non-root user, nothing else ----------------------------------
FROM python:3.11-slim

# In a container the HTTP server and the gateway's /metrics listen on all interfaces (the
# settings default is 127.0.0.1). State that must survive a restart (the simulator's boot
# counters) lives in PLEDGEWATCH_STATE_DIR; mount a volume there where that matters.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PLEDGEWATCH_HTTP_HOST=0.0.0.0 \
    PLEDGEWATCH_STATE_DIR=/var/lib/pledgewatch

RUN groupadd --system --gid 10001 pledgewatch \
 && useradd --system --uid 10001 --gid pledgewatch --create-home \
        --home-dir /home/pledgewatch --shell /usr/sbin/nologin pledgewatch \
 && install -d -o pledgewatch -g pledgewatch -m 0750 /var/lib/pledgewatch

COPY --from=build /opt/venv /opt/venv

USER pledgewatch:pledgewatch
WORKDIR /home/pledgewatch

# 8000: `pledgewatch serve` (API, /docs, the dashboard, /metrics); 9108: gateway Prometheus port.
EXPOSE 8000 9108

ENTRYPOINT ["pledgewatch"]
CMD ["--help"]

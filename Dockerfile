# The portal's image: the web server (gunicorn) and the task cluster (qcluster) run from it; see compose.yaml
# and README, "Running it for real". No demo tools, no tests, no secrets: the settings come from the
# environment when a container starts.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBUG=false PORTAL_VAR_DIR=/var/lib/portal

# WeasyPrint (superbill PDFs) draws text with Pango; fonts for the PDFs; pg_dump for backups from the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 \
       fonts-dejavu-core postgresql-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p portal billing integrations && touch portal/__init__.py billing/__init__.py integrations/__init__.py \
    && pip install ".[production]" && pip uninstall -y practice-billing-portal \
    && rm -rf portal billing integrations build *.egg-info
COPY manage.py ./
COPY portal portal
COPY billing billing
COPY integrations integrations
COPY templates templates
COPY deploy deploy

# Static files into the image (collectstatic runs without the secrets); at each start compose's "setup"
# service collects them again into the volume the reverse proxy serves /static/ from.
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin portal \
    && python manage.py collectstatic --noinput -v0 \
    && mkdir -p /var/lib/portal/csv-imports && chown -R portal /var/lib/portal
USER portal

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz?check=database', timeout=4).status != 200)"
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60", \
     "--forwarded-allow-ips", "*", "--access-logfile", "-"]

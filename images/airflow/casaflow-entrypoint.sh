#!/bin/sh
# Every Airflow process with the workspace umask (group-writable; the casa-worker pods share the
# workspace group), then the base image's entrypoint (the official image: dumb-init + /entrypoint).
umask "${CASAFLOW_UMASK:-0002}"
if [ -x /entrypoint ] && [ -x /usr/bin/dumb-init ]; then
  exec /usr/bin/dumb-init -- /entrypoint "$@"
fi
exec "$@"

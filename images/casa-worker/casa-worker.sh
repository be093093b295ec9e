#!/bin/sh
# casa-worker with the workspace umask: files and directories group-writable, so the Airflow side
# (another uid in the same workspace group) can write next to them.
umask "${CASAFLOW_UMASK:-0002}"
exec /opt/casaflow/bin/casa-worker "$@"

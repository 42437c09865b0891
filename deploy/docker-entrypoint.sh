#!/bin/sh
# Entry point of the IAC-LTH image.
#   docker run ... iac-lth -e search_lth -P data=/store/prepared/acdc   -> one MLflow step
#   docker run ... iac-lth python -c '...'  (or mlflow ui ..., iac ...)  -> that command
# Arguments that start with "-" (or none) are options of `mlflow run` on the project.
set -eu

store="${IAC_STORE:-/store}"
project="${IAC_PROJECT:-/opt/iac-lth}"
# The project's relative folders (data/, outputs/, mlruns/) are links into the store, which
# must be writable: say so in one line instead of a traceback from deep inside a step.
if ! mkdir -p "$store/data" "$store/outputs" "$store/mlruns" 2>/dev/null \
    || ! probe="$(mktemp "$store/.write-probe.XXXXXX" 2>/dev/null)"; then
    echo "iac-lth: the store $store is not writable by uid $(id -u) (mounted read-only, or owned by another user);" \
         "mount a writable host folder with an absolute path: -v /abs/path/store:$store" >&2
    exit 2
fi
rm -f "$probe"

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    exec mlflow run "$project" --env-manager local "$@"
fi
exec "$@"

#!/bin/sh
# Runs the moonroom benchmark; see docs/bench/README.md. Arguments go to run.py
# (--rounds N, --only LIST, --smoke, --moonroom PATH, --loadgen PATH, ...).
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"

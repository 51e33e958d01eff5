#!/usr/bin/env bash
# README command 2: set everything up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests must never talk to a real robot's DDS domain: the graph tests pick their own
# ROS_DOMAIN_ID per run and limit discovery to this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Lint first (configuration in pyproject.toml): a violation fails the run before the ~5 minutes of tests.
.venv/bin/ruff check instseg_ros test launch
exec .venv/bin/python -m pytest test "$@"

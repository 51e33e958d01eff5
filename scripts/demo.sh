#!/usr/bin/env bash
# README command 1: set everything up (idempotent), then run the demo: both nodes on the bundled
# recorded bin sequence through a real rclpy graph, outputs written to ./demo_out (override: $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/instseg demo --out "${1:-demo_out}"

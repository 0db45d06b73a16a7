#!/usr/bin/env bash
# The main job on the embedded default: set up (packages, build, models), then embed and
# generate with the local models. Later capabilities (ingest a sample corpus, serve the API and
# UI) are added here as they land.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
basalt=target/release/basalt

echo
echo "== installed models"
"$basalt" models list

echo
echo "== embed two sentences (all-MiniLM-L6-v2, 384 dimensions)"
"$basalt" embed "Basalt is a fine-grained volcanic rock." "Granite is a coarse-grained intrusive rock."

echo
echo "== generate an answer (SmolLM2-135M-Instruct, greedy)"
"$basalt" generate --max-tokens 64 "What is the capital of France? Answer in one sentence."

#!/usr/bin/env bash
# The main job on the embedded default: set up (packages, build, models), embed and generate
# with the local models, then build a knowledge base from Basalt's own documentation and search
# it, ask it a question and get a cited answer, then serve the OpenAI-compatible API until Ctrl-C.
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

echo
echo "== a knowledge base of Basalt's own documentation (data in ${BASALT_DATA_DIR:-~/.local/share/basalt})"
"$basalt" kb list | grep -q '^quickstart ' || "$basalt" kb create quickstart
"$basalt" ingest --kb quickstart README.md ARCHITECTURE.md docs
# Manuals score questions lower than the Wikipedia prose the default threshold was fitted on.
"$basalt" kb calibrate quickstart

echo
echo "== hybrid search (BM25 + vectors)"
"$basalt" search --kb quickstart --k 3 "How are chunks kept inside the embedding model's limit?"

echo
echo "== a grounded answer with cited sources (ask Basalt how Basalt works)"
"$basalt" ask --kb quickstart "How is an API key stored?"

echo
echo "== an API key for the HTTP API (created once, kept readable by you only)"
data_dir="${BASALT_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/basalt}"
key_file="$data_dir/quickstart-admin.key"
if [ ! -s "$key_file" ]; then
    mkdir -p "$data_dir"
    (umask 077 && "$basalt" keys create --principal admin --policy AdministratorAccess > "$key_file")
fi
echo "key in $key_file"
# The same principal's AWS access key, for boto3 and the AWS CLI (docs/bedrock.md).
aws_file="$data_dir/quickstart-admin.aws"
if [ ! -s "$aws_file" ]; then
    (umask 077 && "$basalt" keys create --aws --principal admin > "$aws_file")
fi
echo "AWS access key in $aws_file (source it: boto3 and the AWS CLI read AWS_ACCESS_KEY_ID and"
echo "AWS_SECRET_ACCESS_KEY); the knowledge base's Bedrock id is $("$basalt" kb list --json | python3 -c 'import json,sys; print(next(kb["bedrock_id"] for kb in json.load(sys.stdin) if kb["name"] == "quickstart"))' 2>/dev/null || echo quickstart)"
echo "web UI: open http://127.0.0.1:8080/ and sign in with that key"
echo "in another terminal:"
echo "  export BASALT_API_KEY=\$(cat $key_file)"
echo "  curl -s localhost:8080/v1/models -H \"Authorization: Bearer \$BASALT_API_KEY\""
echo "  set -a; . $aws_file; set +a; aws bedrock-runtime converse --endpoint-url http://127.0.0.1:8080 --region us-east-1 \\"
echo "    --model-id kb:quickstart --messages '[{\"role\":\"user\",\"content\":[{\"text\":\"How is an API key stored?\"}]}]'"

echo
echo "== the HTTP API (OpenAI-compatible and native, OpenAPI at /openapi.json) and the web UI at /"
exec "$basalt" serve

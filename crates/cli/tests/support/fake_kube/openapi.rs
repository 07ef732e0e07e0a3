//! OpenAPI v3, as little of it as kubectl needs: an index of group-versions, and for each one a
//! document whose PATCH operations declare the `fieldValidation` parameter. kubectl then leaves
//! validation to the server (`fieldValidation=Strict`) instead of validating with schemas, which the
//! fake does not have.

use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::store::{KINDS, no_resource};

fn group_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3` and `/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`.
pub(super) fn serve(path: &[&str]) -> Response {
    match path {
        ["v3"] => {
            let mut paths = Map::new();
            for kind in KINDS {
                let key = group_path(kind.group, kind.version);
                paths.insert(
                    key.clone(),
                    json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash=FAKE") }),
                );
            }
            axum::Json(json!({ "paths": paths })).into_response()
        }
        ["v3", "api", version] => document("", version),
        ["v3", "apis", group, version] => document(group, version),
        _ => no_resource(),
    }
}

fn document(group: &str, version: &str) -> Response {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for kind in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let gvk = json!({ "group": kind.group, "version": kind.version, "kind": kind.kind });
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", kind.kind),
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    { "name": "dryRun", "in": "query", "schema": { "type": "string" } },
                    { "name": "fieldManager", "in": "query", "schema": { "type": "string" } },
                    { "name": "fieldValidation", "in": "query", "schema": { "type": "string" } },
                ],
                "responses": { "200": { "description": "OK" } },
            })
        };
        let prefix = format!(
            "/{}/namespaces/{{namespace}}/{}",
            group_path(group, version),
            kind.plural
        );
        paths.insert(prefix.clone(), json!({ "post": operation("create") }));
        paths.insert(
            format!("{prefix}/{{name}}"),
            json!({ "patch": operation("patch"), "put": operation("replace") }),
        );
        let name = format!(
            "io.k8s.fake.{}.{version}.{}",
            if group.is_empty() { "core" } else { group },
            kind.kind
        );
        schemas.insert(
            name,
            json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "x-kubernetes-group-version-kind": [gvk] }),
        );
    }
    if paths.is_empty() {
        return no_resource();
    }
    axum::Json(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes (fake)", "version": "v1.33.0" },
        "paths": Value::Object(paths),
        "components": { "schemas": Value::Object(schemas) },
    }))
    .into_response()
}

//! Discovery: `/api/v1`, `/apis` and `/apis/GROUP/VERSION` as legacy lists (clients that ask for
//! aggregated discovery take these too), with the kinds, verbs, short names and subresources.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::store::{KINDS, Kind};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resources_of(kind: &Kind) -> Vec<Value> {
    let mut out = vec![json!({
        "name": kind.plural, "singularName": kind.singular, "namespaced": true, "kind": kind.kind,
        "verbs": VERBS, "shortNames": kind.short,
        "categories": if kind.plural == "events" || kind.plural == "configmaps" { json!([]) } else { json!(["all"]) },
    })];
    for sub in kind.subresources {
        let (sub_kind, verbs, group, version) = match *sub {
            "scale" => (
                "Scale",
                json!(["get", "patch", "update"]),
                "autoscaling",
                "v1",
            ),
            "proxy" => (
                "ServiceProxyOptions",
                json!(["create", "delete", "get", "patch", "update"]),
                "",
                "",
            ),
            _ => (kind.kind, json!(["get", "patch", "update"]), "", ""),
        };
        let mut entry = json!({ "name": format!("{}/{sub}", kind.plural), "singularName": "",
            "namespaced": true, "kind": sub_kind, "verbs": verbs });
        if !group.is_empty() {
            entry["group"] = json!(group);
            entry["version"] = json!(version);
        }
        out.push(entry);
    }
    out
}

pub(super) async fn core_resources() -> Response {
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| json!({ "name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs });
    let mut resources = vec![
        json!({ "name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                "verbs": ["get", "list"], "shortNames": ["ns"] }),
        json!({ "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                "verbs": ["create", "delete", "get", "list", "watch"], "shortNames": ["po"], "categories": ["all"] }),
        resource("pods/attach", "PodAttachOptions", true, &["create", "get"]),
        resource("pods/exec", "PodExecOptions", true, &["create", "get"]),
        resource("pods/log", "Pod", true, &["get"]),
        resource(
            "pods/proxy",
            "PodProxyOptions",
            true,
            &["create", "delete", "get", "patch", "update"],
        ),
        json!({ "name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
                "verbs": ["create", "delete", "get", "list", "patch"] }),
    ];
    for kind in KINDS.iter().filter(|k| k.group.is_empty()) {
        resources.extend(resources_of(kind));
    }
    axum::Json(json!({ "kind": "APIResourceList", "groupVersion": "v1", "resources": resources }))
        .into_response()
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = vec![("authorization.k8s.io", "v1")];
    for kind in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !groups.contains(&(kind.group, kind.version)) {
            groups.push((kind.group, kind.version));
        }
    }
    groups
}

pub(super) async fn groups() -> Response {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
            json!({ "name": group, "versions": [gv], "preferredVersion": gv })
        })
        .collect();
    axum::Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }))
        .into_response()
}

/// `/apis/GROUP/VERSION`, or `None` for a group or version the fake does not serve.
pub(super) fn group_resources(group: &str, version: &str) -> Option<Response> {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .flat_map(resources_of)
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(
        axum::Json(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"),
            "resources": resources,
        }))
        .into_response(),
    )
}

//! Server-side printing: the `Table` that `kubectl get` asks for (`Accept: ...;as=Table;...`), with
//! the columns the real API server gives the kinds the fake serves.

use axum::http::HeaderMap;
use serde_json::{Value, json};

pub(super) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

/// Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SSZ` time.
fn epoch_seconds(time: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| time.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn age(object: &Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let Some(created) = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(epoch_seconds)
    else {
        return "<unknown>".into();
    };
    let seconds = (now - created).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

/// The columns and one row's cells for an object of `plural`.
fn columns(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &["Name", "Ready", "Status", "Restarts", "Age"],
        "deployments" => &["Name", "Ready", "Up-to-date", "Available", "Age"],
        "services" => &[
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
        ],
        "configmaps" => &["Name", "Data", "Age"],
        "jobs" => &["Name", "Status", "Completions", "Age"],
        "horizontalpodautoscalers" => {
            &["Name", "Reference", "MinPods", "MaxPods", "Replicas", "Age"]
        }
        "gateways" => &["Name", "Class", "Address", "Programmed", "Age"],
        "httproutes" => &["Name", "Hostnames", "Age"],
        "events" => &["Last Seen", "Type", "Reason", "Object", "Message"],
        _ => &["Name", "Age"],
    }
}

fn cells(plural: &str, object: &Value) -> Vec<Value> {
    let name = json!(object["metadata"]["name"]);
    let status = &object["status"];
    let spec = &object["spec"];
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    match plural {
        "pods" => {
            let container = &status["containerStatuses"][0];
            let ready = u8::from(container["ready"] == true);
            let shown = if !object["metadata"]["deletionTimestamp"].is_null() {
                "Terminating".to_string()
            } else if let Some(reason) = container["state"]["waiting"]["reason"]
                .as_str()
                .or(container["state"]["terminated"]["reason"].as_str())
            {
                reason.to_string()
            } else {
                status["phase"].as_str().unwrap_or("Pending").to_string()
            };
            vec![
                name,
                json!(format!("{ready}/1")),
                json!(shown),
                json!(count(&container["restartCount"])),
                json!(age(object)),
            ]
        }
        "deployments" => vec![
            name,
            json!(format!(
                "{}/{}",
                count(&status["readyReplicas"]),
                count(&spec["replicas"])
            )),
            json!(count(&status["updatedReplicas"])),
            json!(count(&status["availableReplicas"])),
            json!(age(object)),
        ],
        "services" => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", text(&p["port"]), text(&p["protocol"])))
                .collect();
            let external = spec["externalName"].as_str().unwrap_or("<none>");
            vec![
                name,
                json!(spec["type"]),
                json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                json!(external),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(age(object)),
            ]
        }
        "configmaps" => vec![
            name,
            json!(object["data"].as_object().map_or(0, |d| d.len())),
            json!(age(object)),
        ],
        "jobs" => {
            let shown = if condition(object, "Complete").is_some() {
                "Complete"
            } else if condition(object, "Failed").is_some() {
                "Failed"
            } else {
                "Running"
            };
            vec![
                name,
                json!(shown),
                json!(format!(
                    "{}/{}",
                    count(&status["succeeded"]),
                    spec["completions"].as_u64().unwrap_or(1)
                )),
                json!(age(object)),
            ]
        }
        "horizontalpodautoscalers" => vec![
            name,
            json!(format!(
                "{}/{}",
                text(&spec["scaleTargetRef"]["kind"]),
                text(&spec["scaleTargetRef"]["name"])
            )),
            json!(spec["minReplicas"].as_u64().unwrap_or(1)),
            json!(count(&spec["maxReplicas"])),
            json!(count(&status["currentReplicas"])),
            json!(age(object)),
        ],
        "gateways" => vec![
            name,
            json!(spec["gatewayClassName"]),
            json!(status["addresses"][0]["value"].as_str().unwrap_or("")),
            json!(if condition(object, "Programmed").is_some() {
                "True"
            } else {
                "Unknown"
            }),
            json!(age(object)),
        ],
        "httproutes" => {
            let hosts: Vec<String> = spec["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![name, json!(hosts.join(",")), json!(age(object))]
        }
        "events" => vec![
            json!(age(object)),
            json!(object["type"]),
            json!(object["reason"]),
            json!(format!(
                "{}/{}",
                object["involvedObject"]["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase(),
                text(&object["involvedObject"]["name"])
            )),
            json!(object["message"]),
        ],
        _ => vec![name, json!(age(object))],
    }
}

/// A `meta.k8s.io/v1` Table of `items`.
pub(super) fn table(plural: &str, items: &[Value], version: &str) -> Value {
    let definitions: Vec<Value> = columns(plural)
        .iter()
        .map(|name| {
            json!({ "name": name, "type": "string", "format": if *name == "Name" { "name" } else { "" },
                    "description": "", "priority": 0 })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let metadata = json!({
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"],
            });
            json!({ "cells": cells(plural, item), "object": metadata })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": version },
        "columnDefinitions": definitions, "rows": rows,
    })
}

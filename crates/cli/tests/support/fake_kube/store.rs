//! The generic object store: every kind but pods and secrets (which `mod.rs` serves by hand), with
//! create, get, list and watch (label and field selectors), replace, the four patch types (server-side
//! apply among them, with field managers and conflicts), delete, delete-collection and `dryRun=All`.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Fake, Inner, flag, now, param, status};

/// A kind the store serves.
pub(super) struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short: &'static [&'static str],
    pub subresources: &'static [&'static str],
}

pub(super) const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        short: &["svc"],
        subresources: &["status", "proxy"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        short: &["cm"],
        subresources: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        short: &["ev"],
        subresources: &[],
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        short: &["deploy"],
        subresources: &["status", "scale"],
    },
    Kind {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        short: &[],
        subresources: &["status"],
    },
    Kind {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        short: &["hpa"],
        subresources: &["status"],
    },
    Kind {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "gateways",
        singular: "gateway",
        kind: "Gateway",
        short: &["gtw"],
        subresources: &["status"],
    },
    Kind {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "httproutes",
        singular: "httproute",
        kind: "HTTPRoute",
        short: &[],
        subresources: &["status"],
    },
];

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How the API server names the resource in messages: `deployments.apps`, `services`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub(super) fn kind_by_plural(plural: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|kind| kind.plural == plural)
}

pub(super) type Key = (String, String, String);

pub(super) fn key(plural: &str, namespace: &str, name: &str) -> Key {
    (plural.to_string(), namespace.to_string(), name.to_string())
}

/// One field manager's share of an object.
#[derive(Clone, Default)]
pub(super) struct Manager {
    pub operation: String,
    pub time: String,
    pub paths: BTreeSet<FieldPath>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Seg {
    Key(String),
    Name(String),
}

pub(super) type FieldPath = Vec<Seg>;

/// Every field manager of an object.
pub(super) type Managers = BTreeMap<String, Manager>;

fn show(path: &FieldPath) -> String {
    path.iter()
        .map(|seg| match seg {
            Seg::Key(key) => format!(".{key}"),
            Seg::Name(name) => format!("[name=\"{name}\"]"),
        })
        .collect()
}

/// A list of objects that each have a `name`: merged item by item, as containers, env and ports are.
fn keyed(list: &[Value]) -> bool {
    !list.is_empty() && list.iter().all(|item| item["name"].is_string())
}

/// The fields a configuration sets, leaf by leaf (keyed list items count as fields of their own).
pub(super) fn leaf_paths(object: &Value) -> BTreeSet<FieldPath> {
    fn walk(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Object(fields) if !fields.is_empty() => {
                for (key, value) in fields {
                    prefix.push(Seg::Key(key.clone()));
                    walk(value, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) if keyed(items) => {
                for item in items {
                    prefix.push(Seg::Name(item["name"].as_str().unwrap().to_string()));
                    out.insert(prefix.clone());
                    for (key, value) in item.as_object().unwrap() {
                        if key != "name" {
                            prefix.push(Seg::Key(key.clone()));
                            walk(value, prefix, out);
                            prefix.pop();
                        }
                    }
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut prefix = Vec::new();
    for (key, value) in object.as_object().into_iter().flatten() {
        let counted = match key.as_str() {
            "apiVersion" | "kind" | "status" => continue,
            "metadata" => json!({ "labels": value["labels"], "annotations": value["annotations"] }),
            _ => value.clone(),
        };
        if counted.is_null() {
            continue;
        }
        prefix.push(Seg::Key(key.clone()));
        if key == "metadata" {
            for part in ["labels", "annotations"] {
                if counted[part].is_object() {
                    prefix.push(Seg::Key(part.into()));
                    walk(&counted[part], &mut prefix, &mut out);
                    prefix.pop();
                }
            }
        } else {
            walk(&counted, &mut prefix, &mut out);
        }
        prefix.pop();
    }
    out
}

fn get_path<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut here = value;
    for seg in path {
        here = match seg {
            Seg::Key(key) => here.get(key)?,
            Seg::Name(name) => here
                .as_array()?
                .iter()
                .find(|item| item["name"] == **name)?,
        };
    }
    Some(here)
}

fn remove_path(value: &mut Value, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut here = value;
    for seg in parent {
        let next = match seg {
            Seg::Key(key) => here.get_mut(key),
            Seg::Name(name) => here
                .as_array_mut()
                .and_then(|items| items.iter_mut().find(|item| item["name"] == **name)),
        };
        match next {
            Some(next) => here = next,
            None => return,
        }
    }
    match last {
        Seg::Key(key) => {
            if let Some(fields) = here.as_object_mut() {
                fields.remove(key);
            }
        }
        Seg::Name(name) => {
            if let Some(items) = here.as_array_mut() {
                items.retain(|item| item["name"] != **name);
            }
        }
    }
}

/// Server-side apply's merge: maps merge, keyed lists merge item by item, anything else replaces.
pub(super) fn deep_merge(live: &mut Value, config: &Value) {
    match (live, config) {
        (Value::Object(live), Value::Object(config)) => {
            for (key, value) in config {
                match live.get_mut(key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        live.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(live), Value::Array(config)) if keyed(config) && keyed(live) => {
            let mut merged = Vec::new();
            for item in config {
                match live.iter().find(|old| old["name"] == item["name"]) {
                    Some(old) => {
                        let mut old = old.clone();
                        deep_merge(&mut old, item);
                        merged.push(old);
                    }
                    None => merged.push(item.clone()),
                }
            }
            // Items other managers own stay, after the configuration's.
            for old in live.iter() {
                if !config.iter().any(|item| item["name"] == old["name"]) {
                    merged.push(old.clone());
                }
            }
            *live = merged;
        }
        (live, config) => *live = config.clone(),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(object) = target.as_object_mut() {
                object.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

/// RFC 6902, the operations clients use: add, replace, remove, test.
fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    for operation in operations.as_array().ok_or("a JSON patch is a list")? {
        let path = operation["path"]
            .as_str()
            .ok_or("an operation needs a path")?;
        let (parent, last) = path.rsplit_once('/').ok_or("bad path")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let value = operation["value"].clone();
        let op = operation["op"].as_str().unwrap_or("");
        if op == "test" {
            if target.pointer(path) != Some(&value) {
                return Err(format!("testing value {path} failed"));
            }
            continue;
        }
        let container = target
            .pointer_mut(parent)
            .ok_or_else(|| format!("doc is missing path: \"{path}\""))?;
        match (op, container) {
            ("add" | "replace", Value::Object(fields)) => {
                fields.insert(last, value);
            }
            ("remove", Value::Object(fields)) => {
                fields
                    .remove(&last)
                    .ok_or_else(|| format!("doc is missing path: \"{path}\""))?;
            }
            ("add", Value::Array(items)) if last == "-" => items.push(value),
            (op, Value::Array(items)) => {
                let index: usize = last.parse().map_err(|_| "bad index".to_string())?;
                match op {
                    "add" if index <= items.len() => items.insert(index, value),
                    "replace" if index < items.len() => items[index] = value,
                    "remove" if index < items.len() => {
                        items.remove(index);
                    }
                    _ => return Err(format!("bad operation {op} at {path}")),
                }
            }
            _ => return Err(format!("unsupported operation {op} at {path}")),
        }
    }
    Ok(())
}

/// Whether `labels` match a selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.
pub(super) fn selected(selector: Option<&str>, labels: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.trim().is_empty()) else {
        return true;
    };
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().all(|term| {
        let term = term.trim();
        let set = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect()
        };
        if let Some((key, rest)) = term.split_once(" notin ") {
            let value = labels[key.trim()].as_str().unwrap_or("\u{0}");
            !set(rest).iter().any(|v| v == value)
        } else if let Some((key, rest)) = term.split_once(" in ") {
            labels[key.trim()]
                .as_str()
                .is_some_and(|value| set(rest).iter().any(|v| v == value))
        } else if let Some((key, value)) = term.split_once("!=") {
            labels[key.trim()].as_str() != Some(value.trim())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[key.trim()].as_str() == Some(value.trim())
        } else if let Some(key) = term.strip_prefix('!') {
            labels.get(key.trim()).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

/// Whether an object matches a field selector such as `metadata.name=web,involvedObject.kind=Pod`.
pub(super) fn fields_selected(selector: Option<&str>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (path, value, equal) = if let Some((path, value)) = term.split_once("!=") {
            (path, value, false)
        } else if let Some((path, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (path, value, true)
        } else {
            return true;
        };
        let mut here = object;
        for part in path.trim().split('.') {
            here = &here[part];
        }
        let actual = match here {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (actual == value.trim()) == equal
    })
}

fn success(name: &str, kind: &Kind, uid: &Value) -> Response {
    axum::Json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": { "name": name, "group": kind.group, "kind": kind.plural, "uid": uid },
    }))
    .into_response()
}

pub(super) fn not_found_of(kind: &Kind, name: &str) -> Response {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", kind.qualified()),
    )
}

pub(super) fn no_resource() -> Response {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource".into(),
    )
}

/// The body of a write: JSON, or YAML for an apply.
#[allow(clippy::result_large_err)]
fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string()))
        .map_err(|error| {
            status(
                400,
                "BadRequest",
                format!("the body of the request could not be decoded: {error}"),
            )
        })
}

fn params_of(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|query| query.0)
        .unwrap_or_default()
}

impl Fake {
    /// Stores `object` (new or changed): defaults, generation, managedFields, resourceVersion, a watch
    /// event, and a nudge to the controllers. Returns it as stored.
    pub(super) fn commit(&self, inner: &mut Inner, kind: &Kind, mut object: Value) -> Value {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let key = key(kind.plural, &namespace, &name);
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        defaults(inner, kind, &mut object);
        let old = inner.objects.get(&key);
        let generation = match old {
            None => 1,
            Some(old) => {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                if old["spec"] != object["spec"] {
                    generation + 1
                } else {
                    generation
                }
            }
        };
        let event = if old.is_some() { "MODIFIED" } else { "ADDED" };
        object["metadata"]["generation"] = json!(generation);
        object["metadata"]["managedFields"] = managed_fields(inner, kind, &key);
        object["metadata"]["resourceVersion"] = json!(inner.next_version());
        inner.objects.insert(key, object.clone());
        self.publish(inner, kind.plural, event, &object);
        object
    }

    /// Removes an object; a watch event, and the controllers see it gone.
    pub(super) fn remove(&self, inner: &mut Inner, kind: &Kind, key: &Key) -> Option<Value> {
        let mut object = inner.objects.remove(key)?;
        inner.fields.remove(key);
        object["metadata"]["resourceVersion"] = json!(inner.next_version());
        self.publish(inner, kind.plural, "DELETED", &object);
        Some(object)
    }

    /// A watch event: kept in the history (for watches from a resourceVersion) and sent to watchers.
    pub(super) fn publish(&self, inner: &mut Inner, plural: &str, event: &str, object: &Value) {
        inner
            .history
            .push_back((plural.to_string(), event.to_string(), object.clone()));
        if inner.history.len() > 4096 {
            inner.history.pop_front();
        }
        let _ = self
            .events
            .send((plural.to_string(), event.to_string(), object.clone()));
        self.wake.notify_one();
    }

    /// Changes the object `key` as `change` says, recording the change for `manager` as an update.
    pub(super) fn modify(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        key: &Key,
        manager: Option<&str>,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let old = inner.objects.get(key)?.clone();
        let mut new = old.clone();
        change(&mut new);
        if new == old {
            return Some(old);
        }
        if let Some(manager) = manager {
            record_update(inner, kind, key, manager, &old, &new);
        }
        Some(self.commit(inner, kind, new))
    }
}

/// What the API server defaults, and the fake's cluster IPs.
fn defaults(inner: &mut Inner, kind: &Kind, object: &mut Value) {
    match kind.plural {
        "deployments" => {
            let spec = &mut object["spec"];
            if spec["replicas"].is_null() {
                spec["replicas"] = json!(1);
            }
            if spec["progressDeadlineSeconds"].is_null() {
                spec["progressDeadlineSeconds"] = json!(600);
            }
            if spec["revisionHistoryLimit"].is_null() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            if spec["strategy"].is_null() {
                spec["strategy"] = json!({ "type": "RollingUpdate",
                    "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" } });
            }
            if spec["template"]["spec"]["restartPolicy"].is_null() {
                spec["template"]["spec"]["restartPolicy"] = json!("Always");
            }
        }
        "services" => {
            let spec = &mut object["spec"];
            if spec["type"].is_null() {
                spec["type"] = json!("ClusterIP");
            }
            if spec["type"] != "ExternalName" && spec["clusterIP"].is_null() {
                inner.cluster_ips += 1;
                let n = inner.cluster_ips;
                let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                if port["targetPort"].is_null() {
                    port["targetPort"] = port["port"].clone();
                }
                if port["protocol"].is_null() {
                    port["protocol"] = json!("TCP");
                }
            }
        }
        "jobs" => {
            let uid = object["metadata"]["uid"].clone();
            let spec = &mut object["spec"];
            if spec["backoffLimit"].is_null() {
                spec["backoffLimit"] = json!(6);
            }
            if spec["completions"].is_null() {
                spec["completions"] = json!(1);
            }
            if spec["parallelism"].is_null() {
                spec["parallelism"] = json!(1);
            }
            if spec["selector"].is_null() {
                spec["selector"] =
                    json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } });
            }
            let labels = &mut spec["template"]["metadata"]["labels"];
            labels["batch.kubernetes.io/controller-uid"] = uid.clone();
            labels["controller-uid"] = uid;
            let name = object["metadata"]["name"].clone();
            let labels = &mut object["spec"]["template"]["metadata"]["labels"];
            labels["batch.kubernetes.io/job-name"] = name.clone();
            labels["job-name"] = name;
        }
        _ => {}
    }
}

/// `metadata.managedFields` as the API server shows them (fieldsV1 built from the owned paths).
fn managed_fields(inner: &Inner, kind: &Kind, key: &Key) -> Value {
    let Some(managers) = inner.fields.get(key) else {
        return json!([]);
    };
    let entries: Vec<Value> = managers
        .iter()
        .map(|(name, manager)| {
            let mut fields = json!({});
            for path in &manager.paths {
                let mut here = &mut fields;
                for seg in path {
                    let key = match seg {
                        Seg::Key(key) => format!("f:{key}"),
                        Seg::Name(name) => format!("k:{{\"name\":\"{name}\"}}"),
                    };
                    if here.get(&key).is_none() {
                        here[key.as_str()] = json!({});
                    }
                    here = &mut here[key.as_str()];
                }
            }
            json!({
                "manager": name, "operation": manager.operation, "apiVersion": kind.api_version(),
                "time": manager.time, "fieldsType": "FieldsV1", "fieldsV1": fields,
            })
        })
        .collect();
    json!(entries)
}

/// An update (not an apply) by `manager`: it owns what it changed, and nobody else does any more.
pub(super) fn record_update(
    inner: &mut Inner,
    _kind: &Kind,
    key: &Key,
    manager: &str,
    old: &Value,
    new: &Value,
) {
    let (before, after) = (leaf_paths(old), leaf_paths(new));
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|path| get_path(old, path) != get_path(new, path))
        .cloned()
        .collect();
    let managers = inner.fields.entry(key.clone()).or_default();
    for (name, owned) in managers.iter_mut() {
        if name != manager {
            owned.paths.retain(|path| !changed.contains(path));
        }
        // Fields that are gone are owned by nobody.
        owned
            .paths
            .retain(|path| after.contains(path) || !before.contains(path));
    }
    let entry = managers.entry(manager.to_string()).or_default();
    entry.operation = "Update".into();
    entry.time = now();
    entry.paths.extend(changed);
    managers.retain(|_, owned| !owned.paths.is_empty());
}

/// Server-side apply of `config` by `manager` onto `live` (absent: the object is created). Returns
/// the new object and the new ownership, or the conflicts.
fn apply(
    live: Option<&Value>,
    managers: &BTreeMap<String, Manager>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, Managers), Vec<(String, FieldPath)>> {
    let wanted = leaf_paths(config);
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    for (name, owned) in managers {
        if name == manager {
            continue;
        }
        for path in wanted.intersection(&owned.paths) {
            if get_path(live, path) != get_path(config, path) {
                conflicts.push((name.clone(), path.clone()));
            }
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut managers = managers.clone();
    let previous = managers
        .get(manager)
        .map(|owned| owned.paths.clone())
        .unwrap_or_default();
    let mut result = live.clone();
    for path in previous.difference(&wanted) {
        let shared = managers
            .iter()
            .any(|(name, owned)| name != manager && owned.paths.contains(path));
        if !shared {
            remove_path(&mut result, path);
        }
    }
    deep_merge(&mut result, config);
    for (_, path) in &conflicts {
        for (name, owned) in managers.iter_mut() {
            if name != manager {
                owned.paths.remove(path);
            }
        }
    }
    managers.insert(
        manager.to_string(),
        Manager {
            operation: "Apply".into(),
            time: now(),
            paths: wanted,
        },
    );
    managers.retain(|_, owned| !owned.paths.is_empty());
    Ok((result, managers))
}

fn conflict_response(conflicts: &[(String, FieldPath)]) -> Response {
    let messages: Vec<String> = conflicts
        .iter()
        .map(|(manager, path)| format!("conflict with \"{manager}\": {}", show(path)))
        .collect();
    let message = if conflicts.len() == 1 {
        format!("Apply failed with 1 conflict: {}", messages[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            messages.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .zip(&messages)
        .map(|((_, path), message)| json!({ "type": "FieldManagerConflict", "message": message, "field": show(path) }))
        .collect();
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Conflict", "details": { "causes": causes }, "code": 409,
    });
    (StatusCode::CONFLICT, axum::Json(body)).into_response()
}

/// A request for `kind` under `/api/v1` or `/apis/GROUP/VERSION`: `rest` is what follows the
/// namespace (or the version, for a request across namespaces).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: Option<String>,
    rest: &[String],
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let params = params_of(uri);
    let dry = param(&params, "dryRun") == Some("All");
    let content = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content.contains("protobuf") || content.contains("cbor") {
        return status(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content})"
            ),
        );
    }
    let name = rest.first().cloned();
    let sub = rest.get(1).map(String::as_str);
    let Some(namespace) = namespace else {
        return if *method == Method::GET && name.is_none() {
            list(fake, kind, None, &params, headers)
        } else {
            no_resource()
        };
    };
    if namespace == "missing" {
        return status(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        );
    }
    match (method.clone(), name, sub) {
        (Method::GET, None, _) => list(fake, kind, Some(&namespace), &params, headers),
        (Method::POST, None, _) => match parse_body(&body) {
            Ok(object) => create(fake, kind, &namespace, object, &params, dry),
            Err(response) => response,
        },
        (Method::DELETE, None, _) => delete_collection(fake, kind, &namespace, &params, dry),
        (Method::GET, Some(name), None | Some("status")) => {
            match fake
                .inner
                .lock()
                .unwrap()
                .objects
                .get(&key(kind.plural, &namespace, &name))
            {
                Some(object) if super::table::wanted(headers) => {
                    let version = text_of(&object["metadata"]["resourceVersion"]);
                    axum::Json(super::table::table(
                        kind.plural,
                        std::slice::from_ref(object),
                        &version,
                    ))
                    .into_response()
                }
                Some(object) => axum::Json(object.clone()).into_response(),
                None => not_found_of(kind, &name),
            }
        }
        (Method::GET, Some(name), Some("scale")) if kind.plural == "deployments" => {
            match fake
                .inner
                .lock()
                .unwrap()
                .objects
                .get(&key(kind.plural, &namespace, &name))
            {
                Some(object) => axum::Json(scale_of(object)).into_response(),
                None => not_found_of(kind, &name),
            }
        }
        (Method::PUT, Some(name), sub) => match parse_body(&body) {
            Ok(object) => replace(fake, kind, &namespace, &name, sub, object, &params, dry),
            Err(response) => response,
        },
        (Method::PATCH, Some(name), sub) => {
            let content = headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .to_string();
            patch(
                fake, kind, &namespace, &name, sub, &content, &body, &params, dry,
            )
        }
        (Method::DELETE, Some(name), None) => delete(fake, kind, &namespace, &name, &body, dry),
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
        ),
    }
}

fn scale_of(object: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": { "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
                      "resourceVersion": object["metadata"]["resourceVersion"], "uid": object["metadata"]["uid"] },
        "spec": { "replicas": object["spec"]["replicas"] },
        "status": { "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
                    "selector": object["spec"]["selector"]["matchLabels"].as_object().map(|labels| labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")) },
    })
}

fn text_of(value: &Value) -> String {
    value.as_str().unwrap_or("").to_string()
}

fn list(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: Option<&str>,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let labels = param(params, "labelSelector").map(String::from);
    let fields = param(params, "fieldSelector").map(String::from);
    let namespace = namespace.map(String::from);
    let matches = move |object: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
            && selected(labels.as_deref(), &object["metadata"]["labels"])
            && fields_selected(fields.as_deref(), object)
    };
    if flag(params, "watch") {
        return super::watch(fake, kind.plural, params, matches);
    }
    let (items, version) = {
        let inner = fake.inner.lock().unwrap();
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((plural, _, _), object)| plural == kind.plural && matches(object))
            .map(|(_, object)| object.clone())
            .collect();
        (items, inner.version)
    };
    if super::table::wanted(headers) {
        return axum::Json(super::table::table(
            kind.plural,
            &items,
            &version.to_string(),
        ))
        .into_response();
    }
    axum::Json(json!({
        "kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
        "metadata": { "resourceVersion": version.to_string() }, "items": items,
    }))
    .into_response()
}

fn manager_of(params: &[(String, String)]) -> String {
    param(params, "fieldManager")
        .unwrap_or("unknown")
        .to_string()
}

/// A new object's metadata, as the API server fills it in.
fn fill_metadata(inner: &mut Inner, object: &mut Value, namespace: &str) {
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["uid"] = json!(inner.next_uid());
    object["metadata"]["creationTimestamp"] = json!(now());
}

fn create(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: &str,
    mut object: Value,
    params: &[(String, String)],
    dry: bool,
) -> Response {
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
        && let Some(prefix) = object["metadata"]["generateName"].as_str()
    {
        let suffix = fake.random_suffix();
        object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
    }
    let Some(name) = object["metadata"]["name"].as_str().map(String::from) else {
        return status(
            422,
            "Invalid",
            format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                kind.kind
            ),
        );
    };
    if let Some(response) = validate(kind, &name, &object) {
        return response;
    }
    let key = key(kind.plural, namespace, &name);
    let mut inner = fake.inner.lock().unwrap();
    if inner.objects.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified()),
        );
    }
    fill_metadata(&mut inner, &mut object, namespace);
    let manager = manager_of(params);
    let empty = json!({});
    if dry {
        let mut object = object;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        defaults(&mut inner, kind, &mut object);
        object["metadata"]["generation"] = json!(1);
        return (StatusCode::CREATED, axum::Json(object)).into_response();
    }
    record_update(&mut inner, kind, &key, &manager, &empty, &object);
    let stored = fake.commit(&mut inner, kind, object);
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

/// What the API server refuses outright, for the kinds the tests write.
fn validate(kind: &Kind, name: &str, object: &Value) -> Option<Response> {
    let invalid = |field: &str, what: &str| {
        Some(status(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {field}: {what}", kind.kind),
        ))
    };
    let bad_name = name.is_empty()
        || name.len() > 253
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if bad_name {
        return invalid(
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
            ),
        );
    }
    match kind.plural {
        "deployments" => {
            if object["spec"]["selector"].is_null() {
                return invalid("spec.selector", "Required value");
            }
            let containers = &object["spec"]["template"]["spec"]["containers"];
            if containers.as_array().is_none_or(Vec::is_empty) {
                return invalid("spec.template.spec.containers", "Required value");
            }
        }
        "jobs"
            if object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty) =>
        {
            return invalid("spec.template.spec.containers", "Required value");
        }
        _ => {}
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn replace(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    mut object: Value,
    params: &[(String, String)],
    dry: bool,
) -> Response {
    let key = key(kind.plural, namespace, name);
    let mut inner = fake.inner.lock().unwrap();
    let Some(old) = inner.objects.get(&key).cloned() else {
        return not_found_of(kind, name);
    };
    if let Some(version) = object["metadata"]["resourceVersion"].as_str()
        && !version.is_empty()
        && old["metadata"]["resourceVersion"] != version
    {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified()
            ),
        );
    }
    let new = match sub {
        Some("status") => {
            let mut new = old.clone();
            new["status"] = object["status"].take();
            new
        }
        Some("scale") => {
            let mut new = old.clone();
            new["spec"]["replicas"] = object["spec"]["replicas"].clone();
            new
        }
        _ => {
            for field in ["uid", "creationTimestamp", "namespace", "name"] {
                object["metadata"][field] = old["metadata"][field].clone();
            }
            object["status"] = old["status"].clone();
            object
        }
    };
    if let Some(response) = validate(kind, name, &new) {
        return response;
    }
    if dry {
        return axum::Json(new).into_response();
    }
    record_update(&mut inner, kind, &key, &manager_of(params), &old, &new);
    let stored = fake.commit(&mut inner, kind, new);
    axum::Json(if sub == Some("scale") {
        scale_of(&stored)
    } else {
        stored
    })
    .into_response()
}

#[allow(clippy::too_many_arguments)]
fn patch(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    content: &str,
    body: &[u8],
    params: &[(String, String)],
    dry: bool,
) -> Response {
    let patch = match parse_body(body) {
        Ok(patch) => patch,
        Err(response) => return response,
    };
    let key = key(kind.plural, namespace, name);
    let mut inner = fake.inner.lock().unwrap();
    let old = inner.objects.get(&key).cloned();
    if content == "application/apply-patch+yaml" {
        let Some(manager) = param(params, "fieldManager").filter(|m| !m.is_empty()) else {
            return status(
                400,
                "BadRequest",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            );
        };
        if patch["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL".into(),
            );
        }
        let managers = inner.fields.get(&key).cloned().unwrap_or_default();
        let mut config = patch.clone();
        // An apply to the object leaves its status alone, and one to `/status` only touches that.
        if sub != Some("status")
            && let Some(fields) = config.as_object_mut()
        {
            fields.remove("status");
        }
        config["metadata"]["name"] = json!(name);
        config["metadata"]["namespace"] = json!(namespace);
        let (mut result, managers) = match apply(
            old.as_ref(),
            &managers,
            &config,
            manager,
            flag(params, "force"),
        ) {
            Ok(applied) => applied,
            Err(conflicts) => return conflict_response(&conflicts),
        };
        if sub == Some("status")
            && let Some(old) = &old
        {
            let status = result["status"].take();
            result = old.clone();
            result["status"] = status;
        }
        if let Some(response) = validate(kind, name, &result) {
            return response;
        }
        let created = old.is_none();
        if created {
            fill_metadata(&mut inner, &mut result, namespace);
        }
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        if dry {
            result["apiVersion"] = json!(kind.api_version());
            result["kind"] = json!(kind.kind);
            defaults(&mut inner, kind, &mut result);
            return (code, axum::Json(result)).into_response();
        }
        // An apply that changes nothing writes nothing (the resourceVersion stays).
        let paths = |m: &Managers| -> Vec<(String, BTreeSet<FieldPath>)> {
            m.iter()
                .map(|(n, o)| (n.clone(), o.paths.clone()))
                .collect()
        };
        let same_owners = inner
            .fields
            .get(&key)
            .is_some_and(|owners| paths(owners) == paths(&managers));
        if let Some(old) = old.filter(|old| *old == result && same_owners) {
            return (code, axum::Json(old)).into_response();
        }
        inner.fields.insert(key.clone(), managers);
        let stored = fake.commit(&mut inner, kind, result);
        return (code, axum::Json(stored)).into_response();
    }
    let Some(old) = old else {
        return not_found_of(kind, name);
    };
    let mut new = old.clone();
    match content {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(&mut new, &patch)
        }
        "application/json-patch+json" => {
            if let Err(message) = json_patch(&mut new, &patch) {
                return status(422, "Invalid", message);
            }
        }
        _ => {
            return status(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content})"
                ),
            );
        }
    }
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        new["metadata"][field] = old["metadata"][field].clone();
    }
    match sub {
        Some("status") => {
            let status = new["status"].take();
            new = old.clone();
            new["status"] = status;
        }
        Some("scale") => {
            let replicas = new["spec"]["replicas"].clone();
            new = old.clone();
            new["spec"]["replicas"] = replicas;
        }
        _ => new["status"] = old["status"].clone(),
    }
    if let Some(response) = validate(kind, name, &new) {
        return response;
    }
    if new == old {
        return axum::Json(old).into_response();
    }
    if dry {
        return axum::Json(new).into_response();
    }
    record_update(&mut inner, kind, &key, &manager_of(params), &old, &new);
    let stored = fake.commit(&mut inner, kind, new);
    axum::Json(if sub == Some("scale") {
        scale_of(&stored)
    } else {
        stored
    })
    .into_response()
}

fn delete(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
    dry: bool,
) -> Response {
    let options: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    let key = key(kind.plural, namespace, name);
    let mut inner = fake.inner.lock().unwrap();
    let Some(object) = inner.objects.get(&key) else {
        return not_found_of(kind, name);
    };
    let uid = object["metadata"]["uid"].clone();
    if let Some(wanted) = options["preconditions"]["uid"].as_str()
        && uid.as_str() != Some(wanted)
    {
        return status(
            409,
            "Conflict",
            format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {}",
                uid.as_str().unwrap_or("")
            ),
        );
    }
    if !dry {
        // Dependents (pods of Deployments and Jobs) go with the garbage collector, in the background
        // whatever the propagation policy.
        fake.remove(&mut inner, kind, &key);
    }
    success(name, kind, &uid)
}

fn delete_collection(
    fake: &std::sync::Arc<Fake>,
    kind: &'static Kind,
    namespace: &str,
    params: &[(String, String)],
    dry: bool,
) -> Response {
    let labels = param(params, "labelSelector");
    let fields = param(params, "fieldSelector");
    let mut inner = fake.inner.lock().unwrap();
    let keys: Vec<Key> = inner
        .objects
        .iter()
        .filter(|((plural, ns, _), object)| {
            plural == kind.plural
                && ns == namespace
                && selected(labels, &object["metadata"]["labels"])
                && fields_selected(fields, object)
        })
        .map(|(key, _)| key.clone())
        .collect();
    let mut items = Vec::new();
    for key in keys {
        if dry {
            items.push(inner.objects[&key].clone());
        } else if let Some(object) = fake.remove(&mut inner, kind, &key) {
            items.push(object);
        }
    }
    axum::Json(json!({
        "kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
        "metadata": { "resourceVersion": inner.version.to_string() }, "items": items,
    }))
    .into_response()
}

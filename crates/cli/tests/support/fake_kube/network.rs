//! The cluster network: the API server's service and pod proxies, the gateway data plane (one
//! loopback port for every Gateway), and the "cluster network" forward proxy that pods get as
//! `http_proxy`, which resolves Service DNS names and the hostnames of HTTPRoutes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::controllers::{endpoint, parents};
use super::{Fake, status};

/// Sends one HTTP/1.1 request to `host:port` and reads the whole answer (the fake's upstreams are
/// small test servers; a chunked answer is decoded).
pub(super) async fn forward(
    host: &str,
    port: u16,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        for (name, value) in headers {
            let lower = name.as_str();
            if matches!(
                lower,
                "host"
                    | "connection"
                    | "content-length"
                    | "transfer-encoding"
                    | "proxy-connection"
                    | "keep-alive"
                    | "authorization"
            ) {
                continue;
            }
            request.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
        }
        request.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("error trying to reach service: dial tcp {host}:{port}: {error}"),
            )
                .into_response();
        }
        Err(_) => {
            return (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response();
        }
    };
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (StatusCode::BAD_GATEWAY, "malformed upstream answer").into_response();
    };
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut body = answer[split + 4..].to_vec();
    let mut lines = head.lines();
    let code: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let mut response = Response::builder().status(code);
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
                continue;
            }
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("connection")
            {
                continue;
            }
            response = response.header(name, value.trim());
        }
    }
    if chunked {
        body = dechunk(&body);
    }
    response
        .body(Body::from(body))
        .unwrap_or_else(|_| (StatusCode::BAD_GATEWAY, "bad upstream headers").into_response())
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// `NAME`, `NAME:PORT` or `SCHEME:NAME:PORT`, as the proxy subresources take them.
fn name_and_port(text: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [name] => (name.to_string(), None),
        ["http" | "https", name, port] => (name.to_string(), Some(port.to_string())),
        ["http" | "https", name] => (name.to_string(), None),
        [name, port] => (name.to_string(), Some(port.to_string())),
        _ => (text.to_string(), None),
    }
}

fn target_path(tail: &[String], uri: &Uri) -> String {
    let mut path = format!("/{}", tail.join("/"));
    if uri.path().ends_with('/') && !path.ends_with('/') {
        path.push('/');
    }
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// `/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn service_proxy(
    fake: &Arc<Fake>,
    namespace: &str,
    target: &str,
    tail: &[String],
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let (name, port) = name_and_port(target);
    let found = endpoint(
        &fake.inner.lock().unwrap(),
        namespace,
        &name,
        port.as_deref(),
        fake.random(),
    );
    match found {
        Ok(host) => {
            forward(
                "127.0.0.1",
                host,
                method,
                &target_path(tail, uri),
                headers,
                &body,
            )
            .await
        }
        Err((404, message)) => status(404, "NotFound", message),
        Err((code, message)) => status(code, "ServiceUnavailable", message),
    }
}

/// `/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH` (PORT a container port).
#[allow(clippy::too_many_arguments)]
pub(super) async fn pod_proxy(
    fake: &Arc<Fake>,
    namespace: &str,
    target: &str,
    tail: &[String],
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let (name, port) = name_and_port(target);
    let host = {
        let inner = fake.inner.lock().unwrap();
        let Some(pod) = inner.pods.get(&(namespace.to_string(), name.clone())) else {
            return status(404, "NotFound", format!("pods \"{name}\" not found"));
        };
        let wanted = match &port {
            Some(port) => port
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(port.clone())),
            None => pod
                .ports
                .first()
                .map(|p| Value::from(p.0))
                .unwrap_or(Value::Null),
        };
        super::kubelet::host_port(&pod.ports, &wanted).map(|(_, host)| host)
    };
    match host {
        Some(host) => {
            forward(
                "127.0.0.1",
                host,
                method,
                &target_path(tail, uri),
                headers,
                &body,
            )
            .await
        }
        None => status(
            503,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: dial tcp 10.0.0.7:{}: connect: connection refused",
                port.unwrap_or_default()
            ),
        ),
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The routes attached to an existing Gateway whose hostnames take `host`.
fn routes_for(fake: &Fake, host: &str) -> Vec<(String, Value)> {
    let inner = fake.inner.lock().unwrap();
    inner
        .objects
        .iter()
        .filter(|((plural, _, _), _)| plural == "httproutes")
        .filter(|((_, namespace, _), route)| {
            parents(route, namespace)
                .iter()
                .any(|(gateway_namespace, gateway)| {
                    inner
                        .objects
                        .get(&super::store::key("gateways", gateway_namespace, gateway))
                        .is_some_and(|g| {
                            super::controllers::admits(g, gateway_namespace, namespace)
                        })
                })
        })
        .filter(|(_, route)| match route["spec"]["hostnames"].as_array() {
            Some(names) if !names.is_empty() => names
                .iter()
                .any(|name| name.as_str().is_some_and(|n| host_matches(n, host))),
            _ => true,
        })
        .map(|((_, namespace, _), route)| (namespace.clone(), route.clone()))
        .collect()
}

/// How specific a rule's match is (longer exact and prefix paths first, then more headers).
fn rule_matches(rule: &Value, path: &str, headers: &HeaderMap) -> Option<(u8, usize, usize)> {
    let matches = rule["matches"].as_array().cloned().unwrap_or_default();
    let default = [serde_json::json!({ "path": { "type": "PathPrefix", "value": "/" } })];
    let matches: &[Value] = if matches.is_empty() {
        &default
    } else {
        &matches
    };
    matches
        .iter()
        .filter_map(|m| {
            let value = m["path"]["value"].as_str().unwrap_or("/");
            let exact = m["path"]["type"] == "Exact";
            let path_ok = if exact {
                path == value
            } else {
                let prefix = value.trim_end_matches('/');
                prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
            };
            let wanted = m["headers"].as_array().cloned().unwrap_or_default();
            let headers_ok = wanted.iter().all(|h| {
                let name = h["name"].as_str().unwrap_or("");
                headers.get(name).and_then(|v| v.to_str().ok()) == h["value"].as_str()
            });
            (path_ok && headers_ok).then_some((u8::from(exact), value.len(), wanted.len()))
        })
        .max()
}

/// The gateway data plane: route by Host, path and headers, pick a backend by weight.
pub(super) async fn gateway(fake: &Arc<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.host())
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_string();
    let path = parts.uri.path().to_string();
    let mut best: Option<((u8, usize, usize), String, Value)> = None;
    for (namespace, route) in routes_for(fake, &host) {
        for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
            if let Some(score) = rule_matches(rule, &path, &parts.headers)
                && best.as_ref().is_none_or(|(b, _, _)| score > *b)
            {
                best = Some((score, namespace.clone(), rule.clone()));
            }
        }
    }
    let Some((_, namespace, rule)) = best else {
        return (StatusCode::NOT_FOUND, "no route matched\n").into_response();
    };
    let backends: Vec<(String, Option<String>, u64)> = rule["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("").to_string(),
                b["port"].as_u64().map(|p| p.to_string()),
                b["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    let total: u64 = backends.iter().map(|b| b.2).sum();
    if total == 0 {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no backend with weight\n",
        )
            .into_response();
    }
    let mut roll = fake.random() % total;
    let (service, port, _) = backends
        .iter()
        .find(|b| {
            if roll < b.2 {
                true
            } else {
                roll -= b.2;
                false
            }
        })
        .unwrap()
        .clone();
    *fake
        .hits
        .lock()
        .unwrap()
        .entry(format!("{namespace}/{service}"))
        .or_default() += 1;
    let found = endpoint(
        &fake.inner.lock().unwrap(),
        &namespace,
        &service,
        port.as_deref(),
        fake.random(),
    );
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    match found {
        Ok(port) => {
            forward(
                "127.0.0.1",
                port,
                &parts.method,
                &path_and_query,
                &parts.headers,
                &body,
            )
            .await
        }
        Err((_, message)) => (StatusCode::SERVICE_UNAVAILABLE, message).into_response(),
    }
}

pub(super) async fn gateway_handler(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    gateway(&fake, request).await
}

/// The cluster network's forward proxy: `GET http://NAME.NS.svc.cluster.local/PATH`.
pub(super) async fn network_proxy(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let host = request
        .uri()
        .host()
        .map(String::from)
        .or_else(|| {
            request
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or("").to_string())
        })
        .unwrap_or_default();
    let port = request.uri().port_u16();
    resolve(&fake, host, port, request, 0).await
}

fn resolve(
    fake: &Arc<Fake>,
    host: String,
    port: Option<u16>,
    request: Request,
    depth: u8,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send + '_>> {
    Box::pin(async move {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
        let service = match labels.as_slice() {
            [name, namespace]
            | [name, namespace, "svc"]
            | [name, namespace, "svc", "cluster", "local"] => {
                let inner = fake.inner.lock().unwrap();
                inner
                    .objects
                    .get(&super::store::key("services", namespace, name))
                    .map(|s| (namespace.to_string(), name.to_string(), s.clone()))
            }
            _ => None,
        };
        if let Some((namespace, name, service)) = service {
            if service["spec"]["type"] == "ExternalName" {
                let external = service["spec"]["externalName"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if depth > 4 {
                    return (StatusCode::BAD_GATEWAY, "ExternalName loop\n").into_response();
                }
                let (parts, body) = request.into_parts();
                let mut request = Request::from_parts(parts, body);
                if let Ok(value) = external.parse() {
                    request.headers_mut().insert("host", value);
                }
                return resolve(fake, external, port, request, depth + 1).await;
            }
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 64 << 20)
                .await
                .unwrap_or_default();
            let found = endpoint(
                &fake.inner.lock().unwrap(),
                &namespace,
                &name,
                port.map(|p| p.to_string()).as_deref(),
                fake.random(),
            );
            return match found {
                Ok(host_port) => {
                    forward(
                        "127.0.0.1",
                        host_port,
                        &parts.method,
                        &path,
                        &parts.headers,
                        &body,
                    )
                    .await
                }
                Err((_, message)) => (StatusCode::SERVICE_UNAVAILABLE, message).into_response(),
            };
        }
        if !routes_for(fake, &host).is_empty() {
            let (mut parts, body) = request.into_parts();
            if let Ok(value) = host.parse() {
                parts.headers.insert("host", value);
            }
            parts.uri = path.parse().unwrap_or_default();
            return gateway(fake, Request::from_parts(parts, body)).await;
        }
        if depth > 0 && matches!(host.as_str(), "127.0.0.1" | "localhost") {
            // An ExternalName pointing out of the cluster, at this machine.
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 64 << 20)
                .await
                .unwrap_or_default();
            return forward(
                &host,
                port.unwrap_or(80),
                &parts.method,
                &path,
                &parts.headers,
                &body,
            )
            .await;
        }
        (
            StatusCode::BAD_GATEWAY,
            format!("dial tcp: lookup {host}: no such host\n"),
        )
            .into_response()
    })
}

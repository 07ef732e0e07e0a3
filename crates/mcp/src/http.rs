//! `mahavishnu serve`: MCP over streamable HTTP at `/mcp`, `/healthz`, the operations as a small JSON
//! API under `/v1/`, and the web dashboard under `/dashboard/` (which checks its own login). Loopback by default, and a bearer token on every request but `/healthz`. A web page
//! must not reach the server: the `Host` header is checked against an allow-list (DNS rebinding), a
//! foreign `Origin` is refused (cross-site requests), and so is any body that is not JSON (the
//! `text/plain` and form posts a browser sends to any site without asking first).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use mahavishnu_api::{Api, Progress, operations};
use mahavishnu_core::Error;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::server::McpServer;

/// Host names every server accepts: the loopback ones.
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1", "[::1]"];

/// Connections the kernel holds for the server before it accepts them. The default of 128 drops the
/// SYNs of a larger burst, and each dropped client waits a full second before it tries again.
const LISTEN_BACKLOG: u32 = 1024;

/// How the HTTP server runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The bearer token requests must carry; required off loopback.
    pub token: Option<String>,
    /// `Host` values accepted besides the loopback names; `*` accepts any.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted besides the server's own (`http://` and a `Host` it accepts by name).
    pub allowed_origins: Vec<String>,
    /// Where to tell the CLI of this user that this server runs (its pid, address and tmux control
    /// clients), while it runs; see `serve_file`.
    pub announce: Option<std::path::PathBuf>,
}

impl HttpOptions {
    /// Checks the rules a server must follow before it listens.
    pub fn check(&self) -> Result<(), Error> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(Error::Invalid(format!(
                "listening on {} exposes your sessions to the network; give a token with --token or \
                 MAHAVISHNU_TOKEN (or listen on 127.0.0.1)",
                self.listen
            )));
        }
        if self.token.as_deref().is_some_and(|token| token.len() < 16) {
            return Err(Error::Invalid(
                "the token is shorter than 16 characters; use a long random one, e.g. `openssl rand -hex 32`"
                    .into(),
            ));
        }
        if let Some(bad) = self
            .allowed_origins
            .iter()
            .find(|origin| !is_origin(origin))
        {
            return Err(Error::Invalid(format!(
                "`{bad}` in serve.allowed_origins (or --allowed-origin) is not an origin; write the \
                 scheme, the host and a port other than the scheme's default, as a browser sends it: \
                 https://app.example or http://localhost:3000"
            )));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|allowed| allowed == "*") || self.host_listed(host)
    }

    /// Whether `host` is a loopback name or one of `allowed_hosts` by name (`*` does not count).
    fn host_listed(&self, host: &str) -> bool {
        let (name, _) = split_host(host);
        LOOPBACK_HOSTS.contains(&name)
            || self.allowed_hosts.iter().any(|allowed| {
                allowed.eq_ignore_ascii_case(host) || allowed.eq_ignore_ascii_case(name)
            })
    }

    /// Whether a request to `host` (already checked) may come from a page of `origin`: one of
    /// `allowed_origins`, or the server's own origin. Own means the page was served from the very
    /// authority the request goes to, and that authority is listed by name: under `allowed_hosts = *`
    /// a page of a rebound foreign name would otherwise count as the server's own.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        if self
            .allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // `https` too: a proxy that ends TLS in front of the server passes the same Host on.
        origin_authority(origin)
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host) && self.host_listed(host))
    }
}

/// Whether `text` has the shape of a browser's `Origin`: `http(s)://host[:port]`, no path (`null` and
/// `*` are not origins a page can be trusted by).
fn is_origin(text: &str) -> bool {
    origin_authority(text.trim_end_matches('/')).is_some_and(|authority| {
        !authority.is_empty()
            && !authority.contains(['/', '*', '?', '#', '@'])
            && !authority.chars().any(char::is_whitespace)
    })
}

/// The authority of an `http` or `https` origin: `https://app.example:8443` → `app.example:8443`.
fn origin_authority(origin: &str) -> Option<&str> {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
}

/// A `Host` value (or an origin's authority) as its name and port: `example.com:8080` →
/// (`example.com`, `8080`), `[::1]:80` → (`[::1]`, `80`); an unbracketed IPv6 address has no port.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => (&host[..=end], host[end + 1..].strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    }
}

/// Compares without leaking through timing how much of the token was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Checks, in order, what every request must pass: an accepted `Host`, no foreign `Origin`, the bearer
/// token, and a JSON body.
async fn guard(State(options): State<Arc<HttpOptions>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !options.host_allowed(host) {
        return error_response(
            StatusCode::FORBIDDEN,
            format!(
                "Host `{host}` is not allowed; add it to serve.allowed_hosts in the config (or pass \
                 --allowed-host) when the server runs behind a proxy or in a container"
            ),
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !options.origin_allowed(origin, host) {
            return error_response(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin `{origin}` is not allowed: this server refuses requests from web pages of \
                     other sites. To let a page of yours in, add its origin to serve.allowed_origins in \
                     the config (or pass --allowed-origin)"
                ),
            );
        }
    }
    // The dashboard checks its own: a session cookie, or the token for a login code.
    let path = request.uri().path();
    let own_check = path == "/healthz" || path == "/dashboard" || path.starts_with("/dashboard/");
    if let Some(token) = &options.token
        && !own_check
        && !bearer(request.headers()).is_some_and(|given| same_secret(given, token.as_bytes()))
    {
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token; send `Authorization: Bearer <token>`",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if carries_body(&request) && !is_json(request.headers()) {
        let given = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{} is not accepted; send the body as JSON with `Content-Type: application/json`",
                given.map_or("a body without a Content-Type".into(), |given| {
                    format!("Content-Type `{given}`")
                })
            ),
        );
    }
    next.run(request).await
}

/// Whether a request has (or, being a POST, is meant to have) a body. Every POST counts, an empty one
/// too: a form can post nothing at all to an operation whose arguments all have defaults.
fn carries_body(request: &Request) -> bool {
    let headers = request.headers();
    request.method() == Method::POST
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

/// Whether the body is declared JSON: `application/json`, with parameters such as `charset` or not.
/// Browsers send `text/plain`, form and multipart bodies cross-site without a preflight; never JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &value[7..])
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn list_operations() -> Response {
    let listed: Vec<Value> = operations()
        .iter()
        .map(|operation| {
            json!({
                "name": operation.name,
                "description": operation.description,
                "read_only": operation.read_only,
                "input_schema": &*operation.input_schema(),
            })
        })
        .collect();
    axum::Json(json!({ "operations": listed })).into_response()
}

fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::UnknownInstance { .. } => StatusCode::NOT_FOUND,
        Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::NotLive { .. } => StatusCode::CONFLICT,
        Error::Unsupported { .. } | Error::TargetNotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
        error if error.is_usage() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A read-only tmux command for the CLI, run through this server's control client of that tmux
/// server, so that the CLI starts no tmux process: `{"socket": NAME, "args": [...]}` answers
/// `{"out": TEXT}` or `{"error": TMUX'S MESSAGE}`; 503 when no control client can serve (the CLI then
/// runs tmux itself).
async fn tmux_command(body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Request {
        socket: String,
        args: Vec<String>,
    }
    let Ok(request) = serde_json::from_slice::<Request>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "send {\"socket\": NAME, \"args\": [...]}",
        );
    };
    if !mahavishnu_terminal::tmux_control::is_read_only(&request.args) {
        return error_response(
            StatusCode::FORBIDDEN,
            "only list-panes, list-sessions, display-message and capture-pane, without #( ), are run here",
        );
    }
    let Some(client) = mahavishnu_terminal::tmux_control::running(&request.socket) else {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no control client of tmux server `{}` here", request.socket),
        );
    };
    match client.command(&request.args).await {
        Some(Ok(out)) => axum::Json(json!({ "out": out })).into_response(),
        Some(Err(error)) => axum::Json(json!({ "error": error })).into_response(),
        None => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control client cannot serve now",
        ),
    }
}

async fn call_operation(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if mahavishnu_api::operation(&name).is_none() {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no operation `{name}`; GET /v1 lists them"),
        );
    }
    let arguments = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(value) => value,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not JSON: {error}; send the arguments as a JSON object"),
                );
            }
        }
    };
    match api.call(&name, arguments, Progress::default()).await {
        Ok(reply) => axum::Json(reply.value).into_response(),
        Err(error) => error_response(status_of(&error), error.to_string()),
    }
}

/// The whole HTTP application: `/mcp`, `/healthz`, `/v1`.
pub fn router(api: Api, options: Arc<HttpOptions>, shutdown: CancellationToken) -> Router {
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown);
    // The guard checks Host for every route; the MCP service checks it again with the same list.
    config = if options.allowed_hosts.iter().any(|host| host == "*") {
        config.disable_allowed_hosts()
    } else {
        let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        hosts.extend(options.allowed_hosts.iter().cloned());
        config.with_allowed_hosts(hosts)
    };
    let mcp_api = api.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(McpServer::new(mcp_api.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let v1 = Router::new()
        .route("/v1", get(list_operations))
        .route("/v1/", get(list_operations))
        .route("/v1/{name}", post(call_operation))
        .with_state(api.clone());
    let dashboard = mahavishnu_dashboard::router(api, options.token.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/tmux/command", post(tmux_command))
        .merge(v1)
        .merge(dashboard)
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(options, guard))
}

/// Serves until `shutdown` resolves; prints the address it listens on to stderr.
pub async fn serve(
    api: Api,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    options.check()?;
    let listener = listen(options.listen)
        .map_err(|e| Error::io(format!("cannot listen on {}", options.listen), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    let announced = match &options.announce {
        Some(path) => {
            let serve = crate::serve_file::RunningServe {
                pid: std::process::id(),
                address,
                tmux_sockets: mahavishnu_terminal::tmux_control::held_sockets(),
            };
            match crate::serve_file::announce(path, &serve) {
                Ok(true) => Some(path.clone()),
                Ok(false) => None,
                Err(e) => {
                    eprintln!(
                        "mahavishnu: warning: cannot write {} ({e}); the CLI will not use this server",
                        path.display()
                    );
                    None
                }
            }
        }
        None => None,
    };
    eprintln!(
        "mahavishnu: serving MCP at http://{address}/mcp, the API at http://{address}/v1 and the \
         dashboard at http://{address}/dashboard/ (`mahavishnu dashboard` logs a browser in)"
    );
    let stop = CancellationToken::new();
    let app = router(api, Arc::new(options), stop.clone());
    // Answers are small and often streamed in pieces (SSE); without NODELAY, Nagle's algorithm and the
    // client's delayed ACK hold each piece back for some 40 ms.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.cancel();
        })
        .await
        .map_err(|e| Error::io("the HTTP server stopped", e));
    if let Some(path) = announced {
        crate::serve_file::withdraw(&path);
    }
    served
}

/// A listener on `address` with a backlog of `LISTEN_BACKLOG` (`TcpListener::bind` asks for 128).
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server need not wait out the old one's TIME_WAITs.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(listen: &str, token: Option<&str>, hosts: &[&str]) -> HttpOptions {
        HttpOptions {
            listen: listen.parse().unwrap(),
            token: token.map(String::from),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allowed_origins: Vec::new(),
            announce: None,
        }
    }

    #[test]
    fn off_loopback_a_long_token_is_required() {
        assert!(options("127.0.0.1:0", None, &[]).check().is_ok());
        let error = options("0.0.0.0:8677", None, &[]).check().unwrap_err();
        assert!(error.to_string().contains("--token"), "{error}");
        assert!(options("0.0.0.0:8677", Some("short"), &[]).check().is_err());
        assert!(
            options("0.0.0.0:8677", Some("0123456789abcdef0123"), &[])
                .check()
                .is_ok()
        );
    }

    #[test]
    fn hosts_are_matched_by_name_or_authority() {
        let options = options("127.0.0.1:0", None, &["proxy.example", "box:9000"]);
        for host in [
            "localhost:8677",
            "127.0.0.1",
            "[::1]:80",
            "proxy.example:443",
            "box:9000",
        ] {
            assert!(options.host_allowed(host), "{host}");
        }
        for host in ["evil.example", "box:9001", "", "localhost.evil.example"] {
            assert!(!options.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn only_the_own_origin_and_listed_ones_pass() {
        let mut options = options("127.0.0.1:0", None, &["proxy.example"]);
        options.allowed_origins = vec!["https://app.example/".into()];
        for (origin, host) in [
            ("http://127.0.0.1:8677", "127.0.0.1:8677"),
            ("http://LOCALHOST:8677", "localhost:8677"),
            ("https://proxy.example", "proxy.example"),
            ("https://app.example", "127.0.0.1:8677"),
        ] {
            assert!(options.origin_allowed(origin, host), "{origin} to {host}");
        }
        for (origin, host) in [
            ("http://evil.example", "127.0.0.1:8677"),
            ("null", "127.0.0.1:8677"),
            ("", "127.0.0.1:8677"),
            ("http://localhost:3000", "localhost:8677"),
            ("http://127.0.0.1:8677.evil.example", "127.0.0.1:8677"),
            ("file://", "127.0.0.1:8677"),
        ] {
            assert!(!options.origin_allowed(origin, host), "{origin} to {host}");
        }
        // Any Host is accepted, but a rebound foreign name is not the server's own origin.
        let any = self::options("127.0.0.1:0", None, &["*"]);
        assert!(!any.origin_allowed("http://evil.example:8677", "evil.example:8677"));
        assert!(any.origin_allowed("http://localhost:8677", "localhost:8677"));
    }

    #[test]
    fn allowed_origins_must_be_origins() {
        for good in ["https://app.example", "http://localhost:3000/"] {
            let mut options = options("127.0.0.1:0", None, &[]);
            options.allowed_origins = vec![good.into()];
            assert!(options.check().is_ok(), "{good}");
        }
        for bad in [
            "null",
            "*",
            "app.example",
            "https://app.example/path",
            "http://*.example",
        ] {
            let mut options = options("127.0.0.1:0", None, &[]);
            options.allowed_origins = vec![bad.into()];
            let error = options.check().unwrap_err().to_string();
            assert!(error.contains("allowed_origins"), "{bad}: {error}");
        }
    }

    #[test]
    fn hosts_split_into_name_and_port() {
        for (host, split) in [
            ("example.com:8080", ("example.com", Some("8080"))),
            ("example.com", ("example.com", None)),
            ("[::1]:80", ("[::1]", Some("80"))),
            ("[::1]", ("[::1]", None)),
            ("::1", ("::1", None)),
            ("box:http", ("box:http", None)),
        ] {
            assert_eq!(split_host(host), split, "{host}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }
}

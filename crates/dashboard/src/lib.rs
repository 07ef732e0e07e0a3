//! The web dashboard of `mahavishnu serve`, under `/dashboard`: every live session's screen in a grid
//! that updates as the screens change (server-sent events), one session in a terminal in the browser
//! (xterm.js over a WebSocket), launching, closing, sending, pausing, resuming and merging, coding
//! sessions with their hook runs, deployments with their traffic, and the event stream. The same
//! operations as the CLI and MCP (the `api` crate).
//!
//! Security: a browser logs in once with a one-time code (`auth`) and holds an HttpOnly,
//! SameSite=Strict cookie; every route wants it, `serve`'s guard has checked `Host` and `Origin`
//! before, a POST must be JSON, every page has a Content Security Policy without inline script, and
//! nothing that holds a screen is cached. Everything the page needs is inside the binary.

pub mod auth;
pub mod live;
pub mod pages;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use mahavishnu_api::{Api, Progress};
use mahavishnu_core::deploy::Manifest;
use mahavishnu_core::{Instance, InstanceId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Logins;
use crate::live::Live;
use crate::pages::Filter;

/// The policy of every dashboard response: its own files only, no inline script or style, no
/// framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The policy of the terminal's page: the same, with the inline styles xterm.js makes.
pub const TERMINAL_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The operations the page may call, each as the CLI and MCP call it.
const ACTIONS: &[&str] = &[
    "terminal_launch",
    "terminal_close",
    "terminal_send",
    "terminal_pause",
    "terminal_resume",
    "terminal_merge",
    "deploy_rollback",
    "traffic_set",
    "workflow_run",
    "sweep_rerun",
];

/// How often an open terminal's screen is read when its target sends no notice of output.
const TERMINAL_TICK: Duration = Duration::from_millis(80);
/// How often its state is looked at when notices say when its screen changed.
const TERMINAL_LOOK: Duration = Duration::from_secs(1);

struct Dashboard {
    api: Api,
    logins: Logins,
    live: Arc<Live>,
    /// `serve`'s bearer token: what asks for login codes must carry it.
    token: Option<String>,
}

/// The dashboard's routes, to be nested in `serve`'s application (which checks `Host` and `Origin`
/// first, and leaves the bearer token to the dashboard's own check).
pub fn router(api: Api, token: Option<String>) -> Router {
    let state = Arc::new(Dashboard {
        live: Live::new(api.clone()),
        api,
        logins: Logins::default(),
        token,
    });
    Router::new()
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(grid))
        .route("/dashboard/tiles", get(tiles))
        .route("/dashboard/updates", get(updates))
        .route("/dashboard/login", get(login))
        .route("/dashboard/codes", post(new_code))
        .route("/dashboard/sessions/{id}", get(terminal))
        .route("/dashboard/sessions/{id}/socket", get(socket))
        .route("/dashboard/sessions/{id}/diff", get(diff))
        .route("/dashboard/actions/{name}", post(action))
        .route("/dashboard/lifecycle", get(lifecycle))
        .route("/dashboard/checkpoints/{id}", get(checkpoint))
        .route("/dashboard/deployments", get(deployments))
        .route("/dashboard/deployments/{service}/logs", get(service_logs))
        .route(
            "/dashboard/deployments/{service}/logs/stream",
            get(service_log_stream),
        )
        .route("/dashboard/workflows", get(workflows))
        .route("/dashboard/sweeps/{id}", get(sweep))
        .route("/dashboard/events", get(events))
        .route("/dashboard/assets/{file}", get(asset))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), gate))
        .with_state(state)
}

/// What every dashboard request passes: a live session cookie (the login trades a code for one; a
/// new code wants `serve`'s bearer token), and then the headers every answer carries.
async fn gate(State(dashboard): State<Arc<Dashboard>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let allowed = match path.as_str() {
        "/dashboard/login" => true,
        "/dashboard/codes" => match &dashboard.token {
            None => true,
            Some(token) => bearer(request.headers())
                .is_some_and(|given| auth::same_secret(given, token.as_bytes())),
        },
        _ => {
            let cookies = request
                .headers()
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok());
            auth::session_of(cookies).is_some_and(|session| dashboard.logins.is_session(session))
        }
    };
    let mut response = if allowed {
        next.run(request).await
    } else {
        let message = "log in first: `mahavishnu dashboard` prints a URL that logs this browser in";
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Html(pages::page(
                "Log in",
                &format!(
                    "<main><h1>Not logged in</h1><p>{}</p></main>",
                    pages::escape(message)
                ),
            )),
        )
            .into_response();
        if path == "/dashboard/codes" {
            response = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response();
        }
        response
    };
    let headers = response.headers_mut();
    // xterm.js sets its own styles (a `<style>` element of its theme): the terminal's page allows
    // inline styles, never inline script.
    let terminal_page = path.starts_with("/dashboard/sessions/") && path.matches('/').count() == 3;
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if terminal_page {
            TERMINAL_CONTENT_SECURITY_POLICY
        } else {
            CONTENT_SECURITY_POLICY
        }),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !path.starts_with("/dashboard/assets/") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &value[7..])
}

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Why a request could not be answered: its status and words.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        failure(self.0, self.1)
    }
}

/// `POST /dashboard/codes`: a one-time login code, and the path that uses it.
async fn new_code(State(dashboard): State<Arc<Dashboard>>) -> Response {
    match dashboard.logins.new_code() {
        Ok(code) => axum::Json(json!({
            "code": code,
            "path": format!("/dashboard/login?code={code}"),
            "expires_in_seconds": auth::CODE_LIFETIME.as_secs(),
        }))
        .into_response(),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot make a code: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// `GET /dashboard/login?code=…`: the code, once, for a session cookie.
async fn login(
    State(dashboard): State<Arc<Dashboard>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    match query.code.as_deref().and_then(|code| dashboard.logins.redeem(code)) {
        Some(session) => {
            let mut response = Redirect::to("/dashboard/").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&auth::set_cookie(&session)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        None => (
            StatusCode::UNAUTHORIZED,
            Html(pages::page(
                "Log in",
                "<main><h1>This link does not log in any more</h1><p>A login link works once, for two \
                 minutes. Run <code>mahavishnu dashboard</code> for a new one.</p></main>",
            )),
        )
            .into_response(),
    }
}

/// Every session with its screen (empty for those without one).
async fn with_screens(api: &Api) -> Result<Vec<(Instance, String)>, Failure> {
    let instances = live::live_instances(api)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let showing: Vec<Instance> = instances
        .iter()
        .filter(|i| live::has_screen(i.state))
        .cloned()
        .collect();
    let screens: BTreeMap<InstanceId, String> = api
        .orchestrator()
        .screens(&showing, false)
        .await
        .into_iter()
        .collect();
    Ok(instances
        .into_iter()
        .map(|instance| {
            let screen = screens.get(&instance.id).cloned().unwrap_or_default();
            (instance, screen)
        })
        .collect())
}

async fn grid(State(dashboard): State<Arc<Dashboard>>, Query(filter): Query<Filter>) -> Response {
    let sessions = match with_screens(&dashboard.api).await {
        Ok(sessions) => sessions,
        Err(failure) => return failure.into_response(),
    };
    let config = &dashboard.api.orchestrator().config().config;
    let profiles: Vec<String> = config.profiles.keys().cloned().collect();
    let targets: Vec<String> = config
        .targets
        .all()
        .map(|(name, _, _)| name.to_string())
        .collect();
    let mut targets = targets;
    for builtin in ["tmux", "pty"] {
        if !targets.iter().any(|t| t == builtin) {
            targets.push(builtin.to_string());
        }
    }
    targets.sort();
    Html(pages::grid(&sessions, &filter, &profiles, &targets)).into_response()
}

async fn tiles(State(dashboard): State<Arc<Dashboard>>, Query(filter): Query<Filter>) -> Response {
    match with_screens(&dashboard.api).await {
        Ok(sessions) => Html(pages::tiles(&sessions, &filter)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /dashboard/updates`: server-sent events, one per change, for as long as the page is open.
async fn updates(
    State(dashboard): State<Arc<Dashboard>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = dashboard.live.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(update) => Event::default()
                .event(match &update {
                    live::Update::Screen { .. } => "screen",
                    live::Update::Sessions { .. } => "sessions",
                    live::Update::Event { .. } => "event",
                })
                .json_data(&update)
                .unwrap_or_default(),
            // A page that fell behind is told to read everything again.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("sessions").data("{}")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn instance_of(api: &Api, id: &str) -> Result<Instance, Failure> {
    let orchestrator = api.orchestrator();
    orchestrator
        .resolve_id(id)
        .and_then(|id| orchestrator.recorded(&id))
        .map_err(|e| Failure(StatusCode::NOT_FOUND, e.to_string()))
}

async fn terminal(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    match instance_of(&dashboard.api, &id) {
        Ok(instance) => Html(pages::terminal(&instance)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn diff(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    let instance = match instance_of(&dashboard.api, &id) {
        Ok(instance) => instance,
        Err(failure) => return failure.into_response(),
    };
    let reply = dashboard
        .api
        .call("terminal_diff", json!({ "id": id }), Progress::default())
        .await;
    let text = match reply {
        Ok(reply) => reply.value["diff"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| reply.summary.clone()),
        Err(e) => format!("error: {e}"),
    };
    Html(pages::diff(&instance, &text)).into_response()
}

/// `POST /dashboard/actions/NAME`: one of the operations the page may call, with JSON arguments.
async fn action(
    State(dashboard): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if !ACTIONS.contains(&name.as_str()) {
        return failure(
            StatusCode::NOT_FOUND,
            format!("the dashboard does not call `{name}`"),
        );
    }
    let arguments: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    match dashboard
        .api
        .call(&name, arguments, Progress::default())
        .await
    {
        Ok(reply) => {
            axum::Json(json!({ "summary": reply.summary, "value": reply.value })).into_response()
        }
        Err(e) => failure(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_screen_loses_its_blank_bottom_but_keeps_its_colours() {
        let screen = "\x1b[32m$ \x1b[0mls\nfile\n\x1b[0m   \n\n";
        assert_eq!(
            super::without_blank_tail(screen),
            "\x1b[32m$ \x1b[0mls\nfile"
        );
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
enum FromTerminal {
    /// What the keyboard typed, as the terminal encodes it.
    Input { data: String },
    /// The browser terminal's size.
    Resize { cols: u16, rows: u16 },
}

/// `GET /dashboard/sessions/ID/socket`: the session's screen (with its colours) as it changes, and
/// the keyboard back.
async fn socket(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let instance = match instance_of(&dashboard.api, &id) {
        Ok(instance) => instance,
        Err(failure) => return failure.into_response(),
    };
    let api = dashboard.api.clone();
    upgrade.on_upgrade(move |socket| run_terminal(api, instance, socket))
}

async fn run_terminal(api: Api, instance: Instance, mut socket: WebSocket) {
    let id = instance.id.clone();
    // First the scrollback, then the screen whenever it changes.
    let orchestrator = api.orchestrator();
    let full = orchestrator
        .capture(
            &id,
            mahavishnu_orchestrator::CaptureOptions {
                lines: None,
                full: true,
                screen: mahavishnu_core::ScreenOptions {
                    scrollback: true,
                    ansi: true,
                },
            },
        )
        .await
        .map(|text| without_blank_tail(&text))
        .unwrap_or_default();
    let mut last = String::new();
    if socket
        .send(Message::Text(
            json!({ "screen": full, "scrollback": true })
                .to_string()
                .into(),
        ))
        .await
        .is_err()
    {
        return;
    }
    // Where the target tells of output, the screen is read when it changes; else every moment.
    let (mut changes, noticing) = orchestrator.screen_changes();
    let mut noticed = noticing.contains(id.target());
    let mut tick = tokio::time::interval(if noticed {
        TERMINAL_LOOK
    } else {
        TERMINAL_TICK
    });
    let mut ended = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            notice = changes.recv(), if noticed => match notice {
                Some(Some(changed)) if changed != id => continue,
                Some(_) => {
                    // A burst of output is one change to read.
                    while changes.try_recv().is_ok() {}
                }
                None => {
                    noticed = false;
                    tick = tokio::time::interval(TERMINAL_TICK);
                    continue;
                }
            },
            received = socket.recv() => {
                let Some(Ok(message)) = received else { return };
                let Message::Text(text) = message else { continue };
                let done = match serde_json::from_str::<FromTerminal>(&text) {
                    Ok(FromTerminal::Input { data }) => api.orchestrator().type_raw(&id, &data).await,
                    // The session takes the browser terminal's size, as a tmux client gives its own.
                    Ok(FromTerminal::Resize { cols, rows }) => {
                        api.orchestrator().resize(&id, rows, cols).await
                    }
                    Err(_) => Ok(()),
                };
                if let Err(e) = done {
                    let message = json!({ "error": e.to_string() });
                    let _ = socket.send(Message::Text(message.to_string().into())).await;
                }
                continue;
            }
        }
        let current = api.orchestrator().instance(&id).await;
        let state = current
            .as_ref()
            .map(|i| i.state_label())
            .unwrap_or_default();
        let live = current.as_ref().is_ok_and(|i| live::has_screen(i.state));
        let screen = match current.as_ref() {
            Ok(instance) if live => api
                .orchestrator()
                .screens(std::slice::from_ref(instance), true)
                .await
                .pop()
                .map(|(_, screen)| without_blank_tail(&screen))
                .unwrap_or_default(),
            _ => last.clone(),
        };
        if screen != last || (!live && !ended) {
            ended = !live;
            last = screen.clone();
            let message = json!({ "screen": screen, "state": state, "live": live });
            if socket
                .send(Message::Text(message.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// A screen without its blank bottom rows (blank once their escape codes are set aside), so that
/// the browser's terminal ends where the session's text does.
fn without_blank_tail(screen: &str) -> String {
    let mut lines: Vec<&str> = screen.lines().collect();
    while lines
        .last()
        .is_some_and(|line| visible(line).trim().is_empty())
    {
        lines.pop();
    }
    lines.join("\n")
}

/// A line's text without its escape sequences (CSI `ESC [ ... letter`).
fn visible(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

async fn call_rows(api: &Api, operation: &str, key: &str) -> Result<Vec<Value>, String> {
    api.call(operation, json!({}), Progress::default())
        .await
        .map(|reply| reply.value[key].as_array().cloned().unwrap_or_default())
        .map_err(|e| e.to_string())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

async fn lifecycle(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let sessions = call_rows(&dashboard.api, "session_list", "sessions").await;
    let runs = call_rows(&dashboard.api, "hooks_runs", "runs").await;
    let checkpoints = call_rows(&dashboard.api, "checkpoint_list", "checkpoints").await;
    let keys = [
        "session_id",
        "event",
        "hook",
        "result",
        "exit_code",
        "duration_ms",
        "output",
    ];
    let runs: Vec<Vec<String>> = runs
        .unwrap_or_default()
        .iter()
        .map(|run| keys.iter().map(|key| cell(&run[*key])).collect())
        .collect();
    let checkpoints: Vec<(String, String, String)> = checkpoints
        .unwrap_or_default()
        .iter()
        .map(|c| (cell(&c["id"]), cell(&c["created_at"]), cell(&c["message"])))
        .collect();
    let intro = match sessions {
        Ok(sessions) => format!(
            "{} coding sessions recorded; their hook runs, newest first, then the checkpoints of \
             the project serve runs in:",
            sessions.len()
        ),
        Err(e) => format!("cannot read the coding sessions: {e}"),
    };
    Html(pages::lifecycle(&intro, &runs, &checkpoints)).into_response()
}

/// `GET /dashboard/checkpoints/ID`: what changed since a checkpoint, as a diff.
async fn checkpoint(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    let reply = dashboard
        .api
        .call("checkpoint_diff", json!({ "id": id }), Progress::default())
        .await;
    let text = match reply {
        Ok(reply) => cell(&reply.value["diff"]),
        Err(e) => format!("error: {e}"),
    };
    Html(pages::diff_page(
        &format!("Checkpoint {id}: the changes since"),
        &text,
        None,
    ))
    .into_response()
}

async fn deployments(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let manifest = Manifest::find(dashboard.api.cwd()).and_then(|path| Manifest::load(&path));
    let graph = match &manifest {
        Ok(manifest) => {
            let services: Vec<pages::GraphService> = manifest
                .services
                .iter()
                .map(|(name, spec)| pages::GraphService {
                    name: name.clone(),
                    kind: spec.kind.as_str().to_string(),
                    needs: spec.needs.clone(),
                    publishes: spec.publishes.clone(),
                    subscribes: spec.subscribes.keys().cloned().collect(),
                })
                .collect();
            pages::graph(&manifest.waves(), &services)
        }
        Err(_) => String::new(),
    };
    let reply = dashboard
        .api
        .call("deployment_status", json!({}), Progress::default())
        .await;
    let (title, note, rows) = match reply {
        Ok(reply) => {
            let mut rows = Vec::new();
            for region in reply.value["regions"].as_array().into_iter().flatten() {
                for service in region["services"].as_array().into_iter().flatten() {
                    for revision in service["revisions"].as_array().into_iter().flatten() {
                        rows.push(pages::RevisionRow {
                            region: cell(&region["region"]),
                            service: cell(&service["name"]),
                            revision: cell(&revision["name"]),
                            weight: revision["weight"].as_u64().unwrap_or(0),
                            health: cell(&revision["health"]["state"]),
                        });
                    }
                }
            }
            (
                cell(&reply.value["sandcastle"]),
                "Services by wave (deployed left to right), needs and topics; then every \
                 region's revisions and their traffic."
                    .to_string(),
                rows,
            )
        }
        Err(e) => (
            "Deployments".to_string(),
            format!("no deployment to show from where serve runs: {e}"),
            Vec::new(),
        ),
    };
    Html(pages::deployments(&title, &graph, &rows, &note)).into_response()
}

async fn service_logs(Path(service): Path<String>) -> Response {
    Html(pages::logs(&service)).into_response()
}

/// `GET /dashboard/deployments/SERVICE/logs/stream`: the service's log lines as server-sent events,
/// the last hundred first, then as they come.
async fn service_log_stream(
    State(dashboard): State<Arc<Dashboard>>,
    Path(service): Path<String>,
) -> Response {
    let Some(deployments) = dashboard.api.deployments() else {
        return failure(StatusCode::NOT_FOUND, "serve has no deployments");
    };
    let opened = Manifest::find(dashboard.api.cwd())
        .and_then(|path| Manifest::load(&path))
        .and_then(|manifest| deployments.engine(&manifest, None));
    let (manifest, engine) = match opened {
        Ok(opened) => opened,
        Err(e) => return failure(StatusCode::NOT_FOUND, e.to_string()),
    };
    let lines = match engine
        .logs(&manifest, &service, None, None, 100, true)
        .await
    {
        Ok(lines) => lines,
        Err(e) => return failure(StatusCode::NOT_FOUND, e.to_string()),
    };
    let events = lines.map(|line| {
        Ok::<_, Infallible>(match line {
            Ok(line) => Event::default().event("line").data(line),
            Err(e) => Event::default().event("error").data(e.to_string()),
        })
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn events(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let orchestrator = dashboard.api.orchestrator();
    let last = orchestrator.last_event_seq().unwrap_or(0);
    let events = orchestrator
        .events((last - 200).max(0), None, 200)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = events
        .iter()
        .rev()
        .map(|event| {
            vec![
                event.at.to_string(),
                event.instance.clone().unwrap_or_default(),
                event.kind.clone(),
                event.detail.to_string(),
            ]
        })
        .collect();
    Html(pages::table(
        "Events",
        "What happened to sessions, newest first; new ones appear as they happen.",
        &["at", "session", "kind", "detail"],
        &rows,
        "events-page",
    ))
    .into_response()
}

/// `GET /dashboard/workflows`: the workflows and the latest sweeps.
async fn workflows(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let listed = call_rows(&dashboard.api, "workflow_list", "workflows").await;
    let sweeps = call_rows(&dashboard.api, "sweep_list", "sweeps").await;
    let note = match (&listed, &sweeps) {
        (Err(e), _) | (_, Err(e)) => format!("cannot read them: {e}"),
        (Ok(listed), _) if listed.is_empty() => {
            "No workflows yet: define them as [workflows.NAME] in your config.".into()
        }
        _ => {
            "Serve runs each on its schedule, hook event or topic; Run now runs one at once.".into()
        }
    };
    let rows: Vec<pages::WorkflowRow> = listed
        .unwrap_or_default()
        .iter()
        .map(|workflow| {
            let when: Vec<String> = [
                ("schedule", &workflow["schedule"]),
                ("on", &workflow["on_event"]),
                ("topic", &workflow["on_topic"]),
            ]
            .into_iter()
            .filter(|(_, value)| value.is_string())
            .map(|(word, value)| format!("{word} {}", cell(value)))
            .collect();
            let last = &workflow["last"];
            pages::WorkflowRow {
                name: cell(&workflow["name"]),
                runs: cell(&workflow["runs"]),
                when: if when.is_empty() {
                    "by hand".into()
                } else {
                    when.join(", ")
                },
                next: cell(&workflow["next_at"]),
                last: match (&workflow["problem"], last.is_object()) {
                    (Value::String(problem), _) => format!("problem: {problem}"),
                    (_, true) => format!(
                        "{} {} ({}): {}",
                        cell(&last["started_at"]),
                        cell(&last["state"]),
                        cell(&last["cause"]),
                        cell(&last["summary"])
                    ),
                    _ => "never run".into(),
                },
            }
        })
        .collect();
    let sweeps: Vec<pages::SweepRow> = sweeps
        .unwrap_or_default()
        .iter()
        .map(|sweep| pages::SweepRow {
            id: cell(&sweep["id"]),
            kind: cell(&sweep["kind"]),
            state: cell(&sweep["state"]),
            started: cell(&sweep["started_at"]),
            ok: format!(
                "{}/{}",
                cell(&sweep["summary"]["ok"]),
                cell(&sweep["summary"]["total"])
            ),
            what: cell(&sweep["what"]),
        })
        .collect();
    Html(pages::workflows(&rows, &sweeps, &note)).into_response()
}

/// `GET /dashboard/sweeps/ID`: one sweep's results.
async fn sweep(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<i64>) -> Response {
    let reply = dashboard
        .api
        .call("sweep_status", json!({ "id": id }), Progress::default())
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return failure(StatusCode::NOT_FOUND, e.to_string()),
    };
    let rows: Vec<Vec<String>> = reply.value["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|result| {
            ["repo", "status", "exit_code", "duration_ms", "last_line"]
                .iter()
                .map(|key| cell(&result[*key]))
                .collect()
        })
        .collect();
    let summary = &reply.value["summary"];
    let failed = summary["ok"] != summary["total"];
    Html(pages::sweep(&id.to_string(), &reply.summary, &rows, failed)).into_response()
}

/// The files the pages load, from inside the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "dashboard.js" => (include_bytes!("../assets/dashboard.js"), "text/javascript"),
        "dashboard.css" => (include_bytes!("../assets/dashboard.css"), "text/css"),
        "xterm.js" => (
            include_bytes!("../assets/vendor/xterm/xterm.js"),
            "text/javascript",
        ),
        "xterm.css" => (
            include_bytes!("../assets/vendor/xterm/xterm.css"),
            "text/css",
        ),
        "addon-fit.js" => (
            include_bytes!("../assets/vendor/xterm/addon-fit.js"),
            "text/javascript",
        ),
        _ => return failure(StatusCode::NOT_FOUND, format!("no asset `{file}`")),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

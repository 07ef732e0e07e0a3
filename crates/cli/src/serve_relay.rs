//! Sends the read-only tmux commands of this process (list, capture) to a running `serve` of the same
//! user and state directory, which runs them through its tmux control client: a `terminal list` then
//! starts no tmux process. Whatever goes wrong (no serve, a file not to be believed, no token, no answer
//! within `PATIENCE`), the target runs tmux itself, as without serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mahavishnu_mcp::serve_file::{RunningServe, find_running, serve_file_path};
use mahavishnu_mcp::token::{existing_token, token_path};
use mahavishnu_terminal::tmux_control::{CommandRelay, is_read_only, set_relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long serve may take to answer before tmux is run here instead.
const PATIENCE: Duration = Duration::from_millis(50);

/// Makes this process's tmux reads go through the serve of `state_dir`, if one runs.
pub fn use_running_serve(state_dir: &Path) {
    set_relay(Arc::new(ServeRelay {
        state_dir: state_dir.to_path_buf(),
        found: OnceLock::new(),
    }));
}

struct ServeRelay {
    state_dir: PathBuf,
    /// The serve and its token, looked for once, on the first tmux read.
    found: OnceLock<Option<(RunningServe, Option<String>)>>,
}

impl ServeRelay {
    fn serve(&self) -> Option<&(RunningServe, Option<String>)> {
        self.found
            .get_or_init(|| {
                let serve = find_running(&serve_file_path(&self.state_dir))?;
                let token = match std::env::var("MAHAVISHNU_TOKEN") {
                    Ok(token) if !token.is_empty() => Some(token),
                    _ => existing_token(&token_path(&self.state_dir)).ok()?,
                };
                Some((serve, token))
            })
            .as_ref()
    }
}

#[async_trait::async_trait]
impl CommandRelay for ServeRelay {
    async fn run(&self, socket: &str, args: &[String]) -> Option<Result<String, String>> {
        if !is_read_only(args) {
            return None;
        }
        let (serve, token) = self.serve()?;
        if !serve.tmux_sockets.iter().any(|held| held == socket) {
            return None;
        }
        let body = serde_json::json!({ "socket": socket, "args": args }).to_string();
        let exchange = post(serve.address, token.as_deref(), &body);
        let (status, reply) = tokio::time::timeout(PATIENCE, exchange).await.ok()?.ok()?;
        if status != 200 {
            return None;
        }
        let reply: serde_json::Value = serde_json::from_str(&reply).ok()?;
        if let Some(out) = reply["out"].as_str() {
            return Some(Ok(out.to_string()));
        }
        reply["error"].as_str().map(|error| Err(error.to_string()))
    }
}

/// One `POST /tmux/command` to serve: its status and body.
async fn post(
    address: SocketAddr,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    request(address, "POST", "/tmux/command", token, body).await
}

/// One HTTP/1.1 request to `serve` on a loopback `address` (a JSON body, the bearer token when
/// given): its status and body. A chunked answer counts as none (serve's answers here have a length).
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Ok((0, String::new()));
    }
    Ok((status, body.to_string()))
}

//! The supervisor's metrics endpoint: `GET /metrics` on a loopback port, in Prometheus text format,
//! for a scraper holding the bearer token in the supervisor's `metrics-token` file (0600). Any local
//! user can reach a loopback port, so the counters are not given without it.

use std::convert::Infallible;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The token a scraper sends, made once per supervisor directory: 32 random bytes in hex.
pub fn token(dir: &Path) -> Result<String, String> {
    let path = dir.join("metrics-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim().to_string();
        if text.len() >= 32 {
            return Ok(text);
        }
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read random bytes for the metrics token: {e}"))?;
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    mahavishnu_core::paths::write_private_file(&path, token.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

/// Serves `metrics()` at `GET /metrics` on 127.0.0.1:`port` (0: any free port); returns the port.
pub async fn serve(
    port: u16,
    token: String,
    metrics: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<u16> {
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        // The port it had before is taken now: any other will do (status shows the new one).
        Err(_) if port != 0 => TcpListener::bind(("127.0.0.1", 0)).await?,
        Err(e) => return Err(e),
    };
    let port = listener.local_addr()?.port();
    let expected = Arc::new(token);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let expected = Arc::clone(&expected);
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let answer = answer(&request, &expected, metrics.as_ref());
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}

fn answer(
    request: &Request<Incoming>,
    expected: &str,
    metrics: &(dyn Fn() -> String + Send + Sync),
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String, kind: &str| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = kind.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "only /metrics here\n".into(),
            "text/plain",
        );
    }
    // The scheme is case-insensitive (RFC 9110, 11.1); the token is not.
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, token)| constant_time_eq(token.trim().as_bytes(), expected.as_bytes()));
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <the supervisor's metrics-token>\n".into(),
            "text/plain",
        );
    }
    reply(StatusCode::OK, metrics(), "text/plain; version=0.0.4")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

//! The HTTP router of a service: splits requests across revisions by weight.
//! (Placeholder with the final API; the real router replaces it.)

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mahavishnu_core::deploy::RevisionMetrics;

/// One process of a revision.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A revision with its weight and healthy upstreams.
pub struct RouteRevision {
    /// Its name.
    pub name: String,
    /// Its weight.
    pub weight: u8,
    /// Its healthy processes.
    pub upstreams: Vec<Upstream>,
}

/// Everything a router sends to.
pub struct RouteTable {
    /// The revisions.
    pub revisions: Vec<RouteRevision>,
}

/// A router.
#[derive(Clone)]
pub struct Router {
    port: u16,
}

impl Router {
    /// Binds.
    pub async fn bind(port: u16) -> std::io::Result<Router> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        std::mem::forget(listener);
        Ok(Router { port })
    }
    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Sets routes.
    pub fn set_routes(&self, _table: RouteTable) {}
    /// Metrics.
    pub fn metrics(&self) -> BTreeMap<String, RevisionMetrics> {
        BTreeMap::new()
    }
    /// Prometheus.
    pub fn prometheus(&self, _service: &str, _out: &mut String) {}
    /// Probe.
    pub fn expect_probe(&self, _path: &str, _nonce: &str) {}
    /// Probe answer.
    pub fn probe_answer(&self, _nonce: &str) -> Option<u16> {
        None
    }
    /// Stop.
    pub fn shutdown(&self) {}
}

//! Mahavishnu as an MCP server (rmcp) over stdio and streamable HTTP, and its HTTP JSON API. Every tool
//! is an operation of `mahavishnu-api`, so MCP clients, the HTTP API and the CLI share parameters, JSON
//! shapes and error messages.

mod catalog;
pub mod http;
mod live;
pub mod serve_file;
pub mod server;
pub mod token;

use mahavishnu_api::Api;
use mahavishnu_core::Error;
use rmcp::ServiceExt;

pub use http::{HttpOptions, serve};
pub use server::McpServer;

/// Serves MCP on stdin and stdout until the client closes the connection. Nothing but protocol
/// messages is written to stdout.
pub async fn serve_stdio(api: Api) -> Result<(), Error> {
    let running = McpServer::new(api)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| {
            Error::Failed(format!(
                "the MCP client did not complete the handshake: {e}"
            ))
        })?;
    running
        .waiting()
        .await
        .map_err(|e| Error::Failed(format!("the MCP connection failed: {e}")))?;
    Ok(())
}

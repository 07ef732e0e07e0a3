//! What the front door and monitoring share: clients built with the settings' endpoint and
//! credentials, and calls bounded by the settings' timeout, their errors in the API's own words.

use std::time::Duration;

use mahavishnu_core::{Error, Result};

use crate::convert::{api_error, is_not_found};

/// Builds one official client with the settings' endpoint and credentials.
macro_rules! build_client {
    ($type:ty, $settings:expr) => {{
        let settings: &$crate::settings::CloudRunSettings = $settings;
        // A refused connection or an unavailable API is retried a few times, not for minutes.
        let mut builder = <$type>::builder().with_retry_policy(
            google_cloud_gax::retry_policy::RetryPolicyExt::with_time_limit(
                google_cloud_gax::retry_policy::RetryPolicyExt::with_attempt_limit(
                    google_cloud_gax::retry_policy::Aip194Strict,
                    3,
                ),
                settings.request_timeout,
            ),
        );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        if settings.anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        builder.build().await.map_err(|e| {
            mahavishnu_core::Error::Failed(format!(
                "cannot make the {} client for {}: {e}",
                stringify!($type),
                settings.location()
            ))
        })?
    }};
}
pub(crate) use build_client;

/// The clients' HTTP stack wants a process-wide crypto provider; ring, as the rest of the workspace.
/// Losing a race to install one is fine: one is then installed.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Calls bounded by one timeout, against one place (for messages).
#[derive(Clone, Debug)]
pub(crate) struct Bounded {
    /// How long one call may take.
    pub timeout: Duration,
    /// Where the calls go, in a few words.
    pub location: String,
}

impl Bounded {
    fn late(&self, what: &str) -> Error {
        Error::Failed(format!(
            "{what}: no answer from {} within {:?}",
            self.location, self.timeout
        ))
    }

    /// One call, its error in the API's words.
    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = std::result::Result<T, google_cloud_gax::error::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| api_error(what, e)),
            Err(_) => Err(self.late(what)),
        }
    }

    /// Like [`call`](Self::call), with "not found" as `None`.
    pub async fn found<T>(
        &self,
        what: &str,
        call: impl Future<Output = std::result::Result<T, google_cloud_gax::error::Error>>,
    ) -> Result<Option<T>> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(Some(value)),
            Ok(Err(e)) if is_not_found(&e) => Ok(None),
            Ok(Err(e)) => Err(api_error(what, e)),
            Err(_) => Err(self.late(what)),
        }
    }
}

/// Moves a listing to its next page: `false` when there is none, or when the answer gives the same
/// token again (the listing would never end).
pub(crate) fn next_page(token: &mut String, next: String) -> bool {
    if next.is_empty() || next == *token {
        return false;
    }
    *token = next;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_ends_at_the_last_page_or_at_a_token_given_twice() {
        let mut token = String::new();
        assert!(next_page(&mut token, "p2".into()));
        assert_eq!(token, "p2");
        assert!(
            !next_page(&mut token, "p2".into()),
            "a repeated token ends it"
        );
        assert!(!next_page(&mut token, String::new()));
    }
}

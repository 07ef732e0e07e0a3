//! Where a sandcastle goes on Cloud Run: the manifest's `[platforms.cloudrun]` (the project, or the
//! name of a `cloudrun` target) and the user's `[targets.NAME]` (endpoint and credentials, which a
//! project file never decides).

use std::time::Duration;

use mahavishnu_core::config::TargetConfig;
use mahavishnu_core::{Error, Result};

/// The keys `[platforms.cloudrun]` takes.
const MANIFEST_KEYS: &[&str] = &["project", "target", "regions", "service_account"];

/// Cloud Run's own URL of a service: `https://SERVICE-NUMBER.REGION.run.app`.
pub const RUN_APP_URLS: &str = "https://{host}";

/// How long one API call may take unless the target says otherwise.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the Cloud Run platform needs to reach one project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudRunSettings {
    /// The Google Cloud project id.
    pub project: String,
    /// Its number, when known without asking (it names the services' URLs).
    pub project_number: Option<String>,
    /// Where the APIs are reached instead of Google's endpoints (an emulator or a proxy).
    pub endpoint: Option<String>,
    /// Call the APIs without credentials (an emulator); otherwise Application Default Credentials.
    pub anonymous: bool,
    /// The pattern of a service's URL; `{host}` is Cloud Run's host (`SERVICE-NUMBER.REGION.run.app`).
    pub service_urls: String,
    /// Where Pub/Sub is reached instead of Google's endpoint (the Pub/Sub emulator).
    pub pubsub_endpoint: Option<String>,
    /// The service account revisions run as unless a service names its own.
    pub service_account: Option<String>,
    /// How long one API call may take.
    pub request_timeout: Duration,
    /// The target these settings came from, for messages.
    pub target: Option<String>,
    /// Where instances (job executions) run.
    pub region: String,
    /// The image of instances whose profile names none.
    pub image: Option<String>,
    /// The service behind the sandcastle's front door, when it has one.
    pub front_door_service: Option<String>,
    /// The domain the front door answers for (a managed certificate), when it has one.
    pub front_door_domain: Option<String>,
}

/// Where instances run unless the target names a region.
pub const DEFAULT_REGION: &str = "us-central1";

impl CloudRunSettings {
    /// Settings from the manifest's `[platforms.cloudrun]` table and, when it names one, the user's
    /// target (`lookup` finds a target by name and tells whether it is a cloudrun one).
    pub fn resolve(
        table: Option<&toml::Table>,
        lookup: impl Fn(&str) -> Option<(bool, TargetConfig)>,
    ) -> Result<CloudRunSettings> {
        let empty = toml::Table::new();
        let table = table.unwrap_or(&empty);
        let fix = "set `project = \"YOUR-PROJECT\"` under [platforms.cloudrun] in the manifest, or \
                   `target = \"NAME\"` naming a [targets.NAME] kind = \"cloudrun\" in your config";
        if let Some(unknown) = table
            .keys()
            .find(|key| !MANIFEST_KEYS.contains(&key.as_str()))
        {
            return Err(Error::Invalid(format!(
                "platforms.cloudrun.{unknown}: unknown key; [platforms.cloudrun] takes {}",
                MANIFEST_KEYS.join(", ")
            )));
        }
        let text = |key: &str| -> Result<Option<String>> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(value)) if !value.trim().is_empty() => {
                    Ok(Some(value.clone()))
                }
                Some(_) => Err(Error::Invalid(format!(
                    "platforms.cloudrun.{key} must be a non-empty string"
                ))),
            }
        };
        let target = match text("target")? {
            Some(name) => match lookup(&name) {
                Some((true, config)) => Some((name, config)),
                Some((false, _)) => {
                    return Err(Error::Invalid(format!(
                        "platforms.cloudrun.target: the target `{name}` is not a cloudrun target; \
                         give it `kind = \"cloudrun\"` or name another"
                    )));
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "platforms.cloudrun.target: there is no target `{name}`; declare \
                         [targets.{name}] with kind = \"cloudrun\" and project = \"...\" in your config"
                    )));
                }
            },
            None => None,
        };
        let config = target.as_ref().map(|(_, config)| config);
        let manifest_project = text("project")?;
        let target_project = config.and_then(|config| config.project.clone());
        let project = match (manifest_project, target_project) {
            (Some(wanted), Some(given)) if wanted != given => {
                return Err(Error::Invalid(format!(
                    "platforms.cloudrun.project is `{wanted}` but the target `{}` is for `{given}`; \
                     drop one of them",
                    target.as_ref().map_or("", |(name, _)| name.as_str())
                )));
            }
            (Some(project), _) | (None, Some(project)) => project,
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "no Cloud Run project is named; {fix}"
                )));
            }
        };
        let service_account = text("service_account")?;
        let name = target.as_ref().map(|(name, _)| name.clone());
        Self::from_parts(project, config, name, service_account)
    }

    /// Settings of the `cloudrun` target `name` alone (its instances).
    pub fn for_target(name: &str, config: &TargetConfig) -> Result<CloudRunSettings> {
        let project = config.project.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "[targets.{name}] is a cloudrun target without a project; add `project = \"YOUR-PROJECT\"`"
            ))
        })?;
        Self::from_parts(project, Some(config), Some(name.to_string()), None)
    }

    fn from_parts(
        project: String,
        config: Option<&TargetConfig>,
        target: Option<String>,
        service_account: Option<String>,
    ) -> Result<CloudRunSettings> {
        let target_name = target.clone().unwrap_or_default();
        check_project_id(&project)?;
        let anonymous = match config.and_then(|config| config.credentials.as_deref()) {
            None | Some("adc") => false,
            Some("anonymous") => true,
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "targets.{target_name}.credentials is `{other}`; it takes \"adc\" (Application \
                     Default Credentials, the default) or \"anonymous\" (an emulator)"
                )));
            }
        };
        let service_urls = config
            .and_then(|config| config.service_urls.clone())
            .unwrap_or_else(|| RUN_APP_URLS.to_string());
        if !service_urls.contains("{host}") {
            return Err(Error::Invalid(format!(
                "targets.{target_name}.service_urls must contain {{host}} (Cloud Run's \
                 SERVICE-NUMBER.REGION.run.app)"
            )));
        }
        Ok(CloudRunSettings {
            project,
            project_number: config.and_then(|config| config.project_number.clone()),
            endpoint: config.and_then(|config| config.endpoint.clone()),
            anonymous,
            service_urls,
            pubsub_endpoint: config.and_then(|config| config.pubsub_endpoint.clone()),
            service_account: service_account
                .or_else(|| config.and_then(|config| config.service_account.clone())),
            request_timeout: config
                .and_then(|config| config.request_timeout_ms)
                .map_or(REQUEST_TIMEOUT, Duration::from_millis),
            region: config
                .and_then(|config| config.region.clone())
                .unwrap_or_else(|| DEFAULT_REGION.to_string()),
            image: config.and_then(|config| config.image.clone()),
            front_door_service: None,
            front_door_domain: None,
            target,
        })
    }

    /// Where the APIs are, in a few words.
    pub fn location(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("project {} at {endpoint}", self.project),
            None => format!("project {}", self.project),
        }
    }
}

/// Google's rule for project ids: 6 to 30 lowercase letters, digits and hyphens, starting with a letter.
fn check_project_id(project: &str) -> Result<()> {
    let ok = (6..=30).contains(&project.len())
        && project.starts_with(|c: char| c.is_ascii_lowercase())
        && !project.ends_with('-')
        && project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{project}` is not a Google Cloud project id (6 to 30 lowercase letters, digits and \
             hyphens, starting with a letter); give the project's id, not its name or number"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    fn none(_: &str) -> Option<(bool, TargetConfig)> {
        None
    }

    #[test]
    fn a_manifest_project_alone_uses_google_and_adc() {
        let settings =
            CloudRunSettings::resolve(Some(&table("project = \"acme-prod\"")), none).unwrap();
        assert_eq!(settings.project, "acme-prod");
        assert_eq!(settings.endpoint, None);
        assert!(!settings.anonymous);
        assert_eq!(settings.service_urls, RUN_APP_URLS);
    }

    #[test]
    fn a_target_brings_endpoint_and_credentials() {
        let lookup = |name: &str| {
            (name == "emu").then(|| {
                (
                    true,
                    TargetConfig {
                        project: Some("acme-test".into()),
                        endpoint: Some("http://127.0.0.1:9".into()),
                        credentials: Some("anonymous".into()),
                        ..TargetConfig::default()
                    },
                )
            })
        };
        let settings = CloudRunSettings::resolve(Some(&table("target = \"emu\"")), lookup).unwrap();
        assert_eq!(settings.project, "acme-test");
        assert!(settings.anonymous);
        assert_eq!(settings.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let cases = [
            ("", "no Cloud Run project is named"),
            (
                "project = \"Acme Prod\"",
                "is not a Google Cloud project id",
            ),
            (
                "projekt = \"acme-prod\"",
                "platforms.cloudrun.projekt: unknown key",
            ),
            ("target = \"nowhere\"", "there is no target `nowhere`"),
            (
                "project = 7",
                "platforms.cloudrun.project must be a non-empty string",
            ),
        ];
        for (text, expected) in cases {
            let error = CloudRunSettings::resolve(Some(&table(text)), none)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_project_file_cannot_point_the_calls_elsewhere() {
        // The endpoint and the credentials are the user's to set: a manifest that tries is refused.
        let error = CloudRunSettings::resolve(
            Some(&table(
                "project = \"acme-prod\"\nendpoint = \"http://evil.example\"",
            )),
            none,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("platforms.cloudrun.endpoint: unknown key"),
            "{error}"
        );
    }
}

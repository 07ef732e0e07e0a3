//! [`Monitoring`]: Cloud Monitoring for Cloud Run services: one uptime check per service and region,
//! and the request counts of each revision (`run.googleapis.com/request_count`), which rollout gates
//! read as an error rate.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use google_cloud_api::model::MonitoredResource;
use google_cloud_monitoring_v3::client::{MetricService, UptimeCheckService};
use google_cloud_monitoring_v3::model::{
    Aggregation, TimeInterval, UptimeCheckConfig, aggregation, typed_value, uptime_check_config,
};
use mahavishnu_core::deploy::RevisionMetrics;
use mahavishnu_core::{Error, Result};

use crate::calls::{Bounded, build_client, install_crypto_provider, next_page};
use crate::names::{MANAGED_BY, SANDCASTLE_LABEL, SERVICE_LABEL, label_value};
use crate::settings::CloudRunSettings;

/// The region an uptime check watches.
const REGION_LABEL: &str = "mahavishnu-region";
/// Cloud Run's request counter.
const REQUEST_COUNT: &str = "run.googleapis.com/request_count";
/// How often an uptime check runs, and how long one check may take.
const CHECK_PERIOD: Duration = Duration::from_secs(60);
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One uptime check Mahavishnu made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UptimeCheck {
    /// Its resource name (`projects/P/uptimeCheckConfigs/ID`).
    pub name: String,
    /// The manifest's name of the service it checks.
    pub service: String,
    /// The region of the service it checks.
    pub region: String,
    /// The URL it requests.
    pub url: String,
}

/// Cloud Monitoring in one project.
pub struct Monitoring {
    project: String,
    calls: Bounded,
    uptime: UptimeCheckService,
    metrics: MetricService,
}

impl std::fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitoring")
            .field("project", &self.project)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

/// What an uptime check requests: `https://HOST[:PORT]/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    ssl: bool,
    host: String,
    port: i32,
    path: String,
}

impl Target {
    /// The target of `url` + `path` (`url` may have a path of its own, which comes first).
    fn parse(url: &str, path: &str) -> Result<Target> {
        let bad = || {
            Error::Invalid(format!(
                "`{url}` is not an http(s) URL an uptime check can request"
            ))
        };
        let (ssl, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (authority, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<i32>().map_err(|_| bad())?),
            None => (authority, if ssl { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if path.starts_with('/') {
            format!("{prefix}{path}")
        } else {
            format!("{prefix}/{path}")
        };
        Ok(Target {
            ssl,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The target an uptime check has.
    fn of(check: &UptimeCheckConfig) -> Option<Target> {
        let Some(uptime_check_config::Resource::MonitoredResource(resource)) = &check.resource
        else {
            return None;
        };
        let Some(uptime_check_config::CheckRequestType::HttpCheck(http)) =
            &check.check_request_type
        else {
            return None;
        };
        Some(Target {
            ssl: http.use_ssl,
            host: resource.labels.get("host").cloned().unwrap_or_default(),
            port: if http.port == 0 {
                if http.use_ssl { 443 } else { 80 }
            } else {
                http.port
            },
            path: if http.path.is_empty() {
                "/".to_string()
            } else {
                http.path.clone()
            },
        })
    }

    fn url(&self) -> String {
        let scheme = if self.ssl { "https" } else { "http" };
        let default = if self.ssl { 443 } else { 80 };
        if self.port == default {
            format!("{scheme}://{}{}", self.host, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }

    fn http_check(&self) -> uptime_check_config::HttpCheck {
        let mut http = uptime_check_config::HttpCheck::new();
        http.request_method = uptime_check_config::http_check::RequestMethod::Get;
        http.use_ssl = self.ssl;
        http.validate_ssl = self.ssl;
        http.path = self.path.clone();
        http.port = self.port;
        http
    }
}

/// Whether a check's labels say it is Mahavishnu's, of this sandcastle (and service, and region).
fn is_ours(
    check: &UptimeCheckConfig,
    sandcastle: &str,
    service: Option<&str>,
    region: Option<&str>,
) -> bool {
    let label = |key: &str| check.user_labels.get(key).map(String::as_str);
    label(MANAGED_BY.0) == Some(MANAGED_BY.1)
        && label(SANDCASTLE_LABEL) == Some(label_value(sandcastle).as_str())
        && service.is_none_or(|service| label(SERVICE_LABEL) == Some(label_value(service).as_str()))
        && region.is_none_or(|region| label(REGION_LABEL) == Some(label_value(region).as_str()))
}

impl Monitoring {
    /// Cloud Monitoring's clients for these settings.
    pub async fn new(settings: &CloudRunSettings) -> Result<Monitoring> {
        install_crypto_provider();
        Ok(Monitoring {
            project: settings.project.clone(),
            calls: Bounded {
                timeout: settings.request_timeout,
                location: settings.location(),
            },
            uptime: build_client!(UptimeCheckService, settings),
            metrics: build_client!(MetricService, settings),
        })
    }

    fn parent(&self) -> String {
        format!("projects/{}", self.project)
    }

    async fn list_checks(&self) -> Result<Vec<UptimeCheckConfig>> {
        let mut checks = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .calls
                .call(
                    &format!("listing the uptime checks of {}", self.parent()),
                    self.uptime
                        .list_uptime_check_configs()
                        .set_parent(self.parent())
                        .set_page_token(&token)
                        .send(),
                )
                .await?;
            checks.extend(page.uptime_check_configs);
            if !next_page(&mut token, page.next_page_token) {
                return Ok(checks);
            }
        }
    }

    /// An uptime check of `url` + `path` named `mahavishnu {sandcastle}/{service} {region}`, labelled
    /// as Mahavishnu's; created when missing, left alone when it already checks that URL and path,
    /// changed otherwise. Returns its resource name.
    pub async fn ensure_uptime_check(
        &self,
        sandcastle: &str,
        service: &str,
        region: &str,
        url: &str,
        path: &str,
    ) -> Result<String> {
        let target = Target::parse(url, path)?;
        let display_name = format!("mahavishnu {sandcastle}/{service} {region}");
        let existing = self
            .list_checks()
            .await?
            .into_iter()
            .find(|check| is_ours(check, sandcastle, Some(service), Some(region)));
        if let Some(existing) = existing {
            match Target::of(&existing) {
                Some(current) if current == target => return Ok(existing.name),
                // Same host: the HTTP check changes in place.
                Some(current) if current.host == target.host => {
                    let mut check = existing.clone();
                    check.check_request_type =
                        Some(uptime_check_config::CheckRequestType::HttpCheck(Box::new(
                            target.http_check(),
                        )));
                    let updated = self
                        .calls
                        .call(
                            &format!("updating the uptime check {}", existing.name),
                            self.uptime
                                .update_uptime_check_config()
                                .set_uptime_check_config(check)
                                .set_update_mask(
                                    google_cloud_wkt::FieldMask::default()
                                        .set_paths(["http_check"]),
                                )
                                .send(),
                        )
                        .await?;
                    return Ok(updated.name);
                }
                // Another host (or not an HTTP check): the monitored resource cannot change, so the
                // check is made anew.
                _ => {
                    self.delete_check(&existing.name).await?;
                }
            }
        }
        let mut resource = MonitoredResource::new();
        resource.r#type = "uptime_url".to_string();
        resource.labels = HashMap::from([
            ("host".to_string(), target.host.clone()),
            ("project_id".to_string(), self.project.clone()),
        ]);
        let mut check = UptimeCheckConfig::new();
        check.display_name = display_name;
        check.period = google_cloud_wkt::Duration::try_from(CHECK_PERIOD).ok();
        check.timeout = google_cloud_wkt::Duration::try_from(CHECK_TIMEOUT).ok();
        check.resource = Some(uptime_check_config::Resource::MonitoredResource(Box::new(
            resource,
        )));
        check.check_request_type = Some(uptime_check_config::CheckRequestType::HttpCheck(
            Box::new(target.http_check()),
        ));
        check.user_labels = HashMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (SANDCASTLE_LABEL.to_string(), label_value(sandcastle)),
            (SERVICE_LABEL.to_string(), label_value(service)),
            (REGION_LABEL.to_string(), label_value(region)),
        ]);
        let created = self
            .calls
            .call(
                &format!("creating the uptime check of {sandcastle}/{service} in {region}"),
                self.uptime
                    .create_uptime_check_config()
                    .set_parent(self.parent())
                    .set_uptime_check_config(check)
                    .send(),
            )
            .await?;
        Ok(created.name)
    }

    async fn delete_check(&self, name: &str) -> Result<()> {
        self.calls
            .found(
                &format!("deleting the uptime check {name}"),
                self.uptime
                    .delete_uptime_check_config()
                    .set_name(name)
                    .send(),
            )
            .await?;
        Ok(())
    }

    /// Deletes the uptime checks of a service (in every region when `region` is `None`); what is
    /// already gone is fine.
    pub async fn delete_uptime_checks(
        &self,
        sandcastle: &str,
        service: &str,
        region: Option<&str>,
    ) -> Result<()> {
        for check in self.list_checks().await? {
            if is_ours(&check, sandcastle, Some(service), region) {
                self.delete_check(&check.name).await?;
            }
        }
        Ok(())
    }

    /// The uptime checks of a sandcastle, for status.
    pub async fn uptime_checks(&self, sandcastle: &str) -> Result<Vec<UptimeCheck>> {
        Ok(self
            .list_checks()
            .await?
            .into_iter()
            .filter(|check| is_ours(check, sandcastle, None, None))
            .map(|check| UptimeCheck {
                url: Target::of(&check)
                    .map(|target| target.url())
                    .unwrap_or_default(),
                service: check
                    .user_labels
                    .get(SERVICE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                region: check
                    .user_labels
                    .get(REGION_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                name: check.name,
            })
            .collect())
    }

    /// The request counts of each revision of the Cloud Run service `service_id`
    /// (`{sandcastle}-{service}`) in `region` over the last `window`, by Cloud Run revision name:
    /// `run.googleapis.com/request_count` summed per revision and response code class in one call.
    /// Errors are the 5xx answers; latencies are not read (`None`).
    pub async fn revision_metrics(
        &self,
        service_id: &str,
        region: &str,
        window: Duration,
    ) -> Result<BTreeMap<String, RevisionMetrics>> {
        let window = window.max(Duration::from_secs(1));
        let now = SystemTime::now();
        let timestamp = |at: SystemTime| {
            google_cloud_wkt::Timestamp::try_from(at)
                .map_err(|e| Error::Failed(format!("the time {at:?} has no timestamp: {e}")))
        };
        let mut interval = TimeInterval::new();
        interval.end_time = Some(timestamp(now)?);
        interval.start_time = Some(timestamp(now - window)?);
        let mut aggregation = Aggregation::new();
        // One aligned point per series over the window (Monitoring aligns over a minute or more).
        aggregation.alignment_period =
            google_cloud_wkt::Duration::try_from(window.max(Duration::from_secs(60))).ok();
        aggregation.per_series_aligner = aggregation::Aligner::AlignDelta;
        aggregation.cross_series_reducer = aggregation::Reducer::ReduceSum;
        aggregation.group_by_fields = vec![
            "resource.labels.revision_name".to_string(),
            "metric.labels.response_code_class".to_string(),
        ];
        let filter = format!(
            "metric.type = \"{REQUEST_COUNT}\" AND resource.type = \"cloud_run_revision\" AND \
             resource.labels.service_name = \"{service_id}\" AND resource.labels.location = \
             \"{region}\""
        );
        let what = format!("reading the request counts of {service_id} in {region}");
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut token = String::new();
        loop {
            let page = self
                .calls
                .call(
                    &what,
                    self.metrics
                        .list_time_series()
                        .set_name(self.parent())
                        .set_filter(&filter)
                        .set_interval(interval.clone())
                        .set_aggregation(aggregation.clone())
                        .set_page_token(&token)
                        .send(),
                )
                .await?;
            for series in page.time_series {
                let Some(revision) = series
                    .resource
                    .as_ref()
                    .and_then(|resource| resource.labels.get("revision_name"))
                    .cloned()
                else {
                    continue;
                };
                let class = series
                    .metric
                    .as_ref()
                    .and_then(|metric| metric.labels.get("response_code_class"))
                    .cloned()
                    .unwrap_or_default();
                let total: u64 = series
                    .points
                    .iter()
                    .filter_map(|point| point.value.as_ref()?.value.as_ref())
                    .map(|value| match value {
                        typed_value::Value::Int64Value(n) => (*n).max(0) as u64,
                        typed_value::Value::DoubleValue(x) => x.max(0.0).round() as u64,
                        _ => 0,
                    })
                    .sum();
                let entry = counts.entry(revision).or_default();
                entry.0 += total;
                if class == "5xx" {
                    entry.1 += total;
                }
            }
            if !next_page(&mut token, page.next_page_token) {
                break;
            }
        }
        let seconds = window.as_secs_f64();
        Ok(counts
            .into_iter()
            .map(|(revision, (requests, errors))| {
                let metrics = RevisionMetrics {
                    requests,
                    errors,
                    rps: requests as f64 / seconds,
                    error_rate: if requests == 0 {
                        0.0
                    } else {
                        errors as f64 / requests as f64
                    },
                    p50_ms: None,
                    p99_ms: None,
                };
                (revision, metrics)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_and_a_path_make_one_target() {
        let target = Target::parse("https://shop-web-1.europe-west1.run.app", "/healthz").unwrap();
        assert_eq!(
            target,
            Target {
                ssl: true,
                host: "shop-web-1.europe-west1.run.app".into(),
                port: 443,
                path: "/healthz".into()
            }
        );
        assert_eq!(
            target.url(),
            "https://shop-web-1.europe-west1.run.app/healthz"
        );
        let fake = Target::parse("http://127.0.0.1:8123/run/h/", "healthz").unwrap();
        assert_eq!((fake.port, fake.path.as_str()), (8123, "/run/h/healthz"));
        assert_eq!(fake.url(), "http://127.0.0.1:8123/run/h/healthz");
        assert!(Target::parse("ftp://x", "/").is_err());
    }
}

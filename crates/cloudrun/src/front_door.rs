//! [`FrontDoor`]: the global external Application Load Balancer of a multi-region sandcastle on
//! Cloud Run. One serverless network endpoint group per region points at the region's Cloud Run
//! service; a global backend service has each of them as a backend; a URL map sends everything to
//! it; a target proxy (HTTPS with a Google-managed certificate when there is a domain, else HTTP)
//! and a global forwarding rule on a reserved global address face the world. Serverless NEGs take
//! no load-balancer health checks: failover follows Cloud Run's own service health.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use google_cloud_compute_v1::client::{
    BackendServices, GlobalAddresses, GlobalForwardingRules, GlobalOperations,
    RegionNetworkEndpointGroups, RegionOperations, SslCertificates, TargetHttpProxies,
    TargetHttpsProxies, UrlMaps,
};
use google_cloud_compute_v1::model::{
    Address, Backend, BackendService, ForwardingRule, NetworkEndpointGroup,
    NetworkEndpointGroupCloudRun, Operation, SslCertificate, SslCertificateManagedSslCertificate,
    TargetHttpProxy, TargetHttpsProxy, UrlMap, backend_service, forwarding_rule,
    network_endpoint_group, operation, ssl_certificate,
};
use mahavishnu_core::{Error, Result};

use crate::calls::{Bounded, build_client, install_crypto_provider};
use crate::settings::CloudRunSettings;

/// Compute's longest resource name.
const LONGEST_NAME: usize = 63;
/// How often a wait looks again, at first and at most.
const FIRST_POLL: Duration = Duration::from_millis(20);
const LONGEST_POLL: Duration = Duration::from_secs(2);
/// How many request timeouts one operation may take.
const OPERATION_TIMEOUTS: u32 = 4;

/// What a front door is now, or was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontDoorState {
    /// The global IP address its forwarding rule listens on.
    pub address: String,
    /// Where it answers: `https://DOMAIN`, or `http://ADDRESS` without a domain.
    pub url: String,
    /// The regions whose Cloud Run services are behind it.
    pub regions: Vec<String>,
}

/// The global external Application Load Balancer in front of one service's regions.
pub struct FrontDoor {
    project: String,
    calls: Bounded,
    negs: RegionNetworkEndpointGroups,
    backends: BackendServices,
    url_maps: UrlMaps,
    https_proxies: TargetHttpsProxies,
    http_proxies: TargetHttpProxies,
    certificates: SslCertificates,
    addresses: GlobalAddresses,
    rules: GlobalForwardingRules,
    global_operations: GlobalOperations,
    region_operations: RegionOperations,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor")
            .field("project", &self.project)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

/// The names of one front door's resources: `{sandcastle}-{service}-{kind}`.
struct Names {
    base: String,
    backend: String,
    url_map: String,
    certificate: String,
    https_proxy: String,
    http_proxy: String,
    address: String,
    rule: String,
}

impl Names {
    fn new(sandcastle: &str, service: &str) -> Names {
        let base = format!("{sandcastle}-{service}");
        let kind = |kind: &str| format!("{base}-{kind}");
        Names {
            backend: kind("backend"),
            url_map: kind("url-map"),
            certificate: kind("cert"),
            https_proxy: kind("https-proxy"),
            http_proxy: kind("http-proxy"),
            address: kind("address"),
            rule: kind("rule"),
            base,
        }
    }

    /// The serverless NEG of a region: `{sandcastle}-{service}-{region}`.
    fn neg(&self, region: &str) -> String {
        format!("{}-{region}", self.base)
    }

    /// Refuses, before any call, a name Compute would refuse.
    fn check(&self, regions: &[String]) -> Result<()> {
        let mut all = vec![
            &self.backend,
            &self.url_map,
            &self.certificate,
            &self.https_proxy,
            &self.http_proxy,
            &self.address,
            &self.rule,
        ]
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
        all.extend(regions.iter().map(|region| self.neg(region)));
        for name in all {
            let valid = name.len() <= LONGEST_NAME
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && !name.ends_with('-')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(Error::Invalid(format!(
                    "the front door's Compute resource `{name}` (sandcastle-service-kind) must be at \
                     most {LONGEST_NAME} lowercase letters, digits and hyphens, starting with a \
                     letter; shorten the sandcastle or the service name"
                )));
            }
        }
        Ok(())
    }
}

/// A resource reference from `projects/` on: Compute answers full URLs and takes partial ones.
fn path_of(link: &str) -> &str {
    link.find("projects/").map_or(link, |at| &link[at..])
}

/// The region of a regional resource's URL (`…/regions/REGION/…`).
fn region_of(link: &str) -> Option<String> {
    let mut parts = link.split('/');
    parts.find(|part| *part == "regions")?;
    parts.next().map(str::to_string)
}

/// The description of every resource a front door has (most have no labels).
fn description(sandcastle: &str, service: &str) -> String {
    format!("managed by mahavishnu: front door of {sandcastle}/{service}")
}

/// Where an operation lives.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Global,
    Region(&'a str),
}

impl FrontDoor {
    /// The front door's clients for these settings.
    pub async fn new(settings: &CloudRunSettings) -> Result<FrontDoor> {
        install_crypto_provider();
        Ok(FrontDoor {
            project: settings.project.clone(),
            calls: Bounded {
                timeout: settings.request_timeout,
                location: settings.location(),
            },
            negs: build_client!(RegionNetworkEndpointGroups, settings),
            backends: build_client!(BackendServices, settings),
            url_maps: build_client!(UrlMaps, settings),
            https_proxies: build_client!(TargetHttpsProxies, settings),
            http_proxies: build_client!(TargetHttpProxies, settings),
            certificates: build_client!(SslCertificates, settings),
            addresses: build_client!(GlobalAddresses, settings),
            rules: build_client!(GlobalForwardingRules, settings),
            global_operations: build_client!(GlobalOperations, settings),
            region_operations: build_client!(RegionOperations, settings),
        })
    }

    fn global_path(&self, collection: &str, name: &str) -> String {
        format!("projects/{}/global/{collection}/{name}", self.project)
    }

    fn neg_path(&self, region: &str, name: &str) -> String {
        format!(
            "projects/{}/regions/{region}/networkEndpointGroups/{name}",
            self.project
        )
    }

    /// Waits for a Compute operation to be done, up to a few request timeouts; its error, if any, in
    /// Compute's words.
    async fn wait(&self, what: &str, operation: Operation, scope: Scope<'_>) -> Result<()> {
        let deadline = self.calls.timeout * OPERATION_TIMEOUTS;
        let started = Instant::now();
        let mut operation = operation;
        let mut pause = FIRST_POLL;
        while operation.status != Some(operation::Status::Done) {
            let name = operation.name.clone().ok_or_else(|| {
                Error::Failed(format!(
                    "{what}: Compute answered an operation without a name"
                ))
            })?;
            if started.elapsed() > deadline {
                return Err(Error::Failed(format!(
                    "{what}: not done after {deadline:?} (operation {name})"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(LONGEST_POLL);
            let reading = format!("{what}: reading the operation {name}");
            operation = match scope {
                Scope::Global => {
                    self.calls
                        .call(
                            &reading,
                            self.global_operations
                                .get()
                                .set_project(&self.project)
                                .set_operation(&name)
                                .send(),
                        )
                        .await?
                }
                Scope::Region(region) => {
                    self.calls
                        .call(
                            &reading,
                            self.region_operations
                                .get()
                                .set_project(&self.project)
                                .set_region(region)
                                .set_operation(&name)
                                .send(),
                        )
                        .await?
                }
            };
        }
        let errors = operation
            .error
            .as_ref()
            .map(|error| {
                error
                    .errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} ({})",
                            e.message.as_deref().unwrap_or("failed"),
                            e.code.as_deref().unwrap_or("no code")
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(Error::Failed(format!("{what}: {}", errors.join("; "))));
        }
        if let Some(code) = operation.http_error_status_code.filter(|code| *code >= 400) {
            return Err(Error::Failed(format!(
                "{what}: {} (HTTP {code})",
                operation.http_error_message.as_deref().unwrap_or("failed")
            )));
        }
        Ok(())
    }

    async fn get_neg(&self, region: &str, name: &str) -> Result<Option<NetworkEndpointGroup>> {
        self.calls
            .found(
                &format!("reading the network endpoint group {name} in {region}"),
                self.negs
                    .get()
                    .set_project(&self.project)
                    .set_region(region)
                    .set_network_endpoint_group(name)
                    .send(),
            )
            .await
    }

    async fn get_backend(&self, name: &str) -> Result<Option<BackendService>> {
        self.calls
            .found(
                &format!("reading the backend service {name}"),
                self.backends
                    .get()
                    .set_project(&self.project)
                    .set_backend_service(name)
                    .send(),
            )
            .await
    }

    async fn get_url_map(&self, name: &str) -> Result<Option<UrlMap>> {
        self.calls
            .found(
                &format!("reading the URL map {name}"),
                self.url_maps
                    .get()
                    .set_project(&self.project)
                    .set_url_map(name)
                    .send(),
            )
            .await
    }

    async fn get_certificate(&self, name: &str) -> Result<Option<SslCertificate>> {
        self.calls
            .found(
                &format!("reading the SSL certificate {name}"),
                self.certificates
                    .get()
                    .set_project(&self.project)
                    .set_ssl_certificate(name)
                    .send(),
            )
            .await
    }

    async fn get_https_proxy(&self, name: &str) -> Result<Option<TargetHttpsProxy>> {
        self.calls
            .found(
                &format!("reading the target HTTPS proxy {name}"),
                self.https_proxies
                    .get()
                    .set_project(&self.project)
                    .set_target_https_proxy(name)
                    .send(),
            )
            .await
    }

    async fn get_http_proxy(&self, name: &str) -> Result<Option<TargetHttpProxy>> {
        self.calls
            .found(
                &format!("reading the target HTTP proxy {name}"),
                self.http_proxies
                    .get()
                    .set_project(&self.project)
                    .set_target_http_proxy(name)
                    .send(),
            )
            .await
    }

    async fn get_address(&self, name: &str) -> Result<Option<Address>> {
        self.calls
            .found(
                &format!("reading the global address {name}"),
                self.addresses
                    .get()
                    .set_project(&self.project)
                    .set_address(name)
                    .send(),
            )
            .await
    }

    async fn get_rule(&self, name: &str) -> Result<Option<ForwardingRule>> {
        self.calls
            .found(
                &format!("reading the global forwarding rule {name}"),
                self.rules
                    .get()
                    .set_project(&self.project)
                    .set_forwarding_rule(name)
                    .send(),
            )
            .await
    }

    /// Creates or updates: one serverless NEG per region (`{sandcastle}-{service}-{region}`, for the
    /// Cloud Run service `{sandcastle}-{service}`), a global backend service (EXTERNAL_MANAGED) with
    /// each NEG as a backend, a URL map whose default is that backend service, a Google-managed
    /// certificate for `domain` and a target HTTPS proxy when there is a domain (else a target HTTP
    /// proxy), a global address and a global forwarding rule (port 443 or 80).
    ///
    /// Idempotent: reads first; creates what is missing; changes the backend service only when its
    /// set of NEGs differs (then deletes the NEGs of the regions it no longer has); makes no writing
    /// call when everything is as wanted.
    pub async fn ensure(
        &self,
        sandcastle: &str,
        service: &str,
        regions: &[String],
        domain: Option<&str>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<FrontDoorState> {
        let names = Names::new(sandcastle, service);
        names.check(regions)?;
        if regions.iter().collect::<BTreeSet<_>>().len() != regions.len() {
            return Err(Error::Invalid(format!(
                "the front door of {sandcastle}/{service} names a region twice: {}",
                regions.join(", ")
            )));
        }
        if regions.is_empty() {
            return Err(Error::Invalid(format!(
                "the front door of {sandcastle}/{service} needs at least one region"
            )));
        }
        if let Some(domain) = domain
            && (domain.is_empty() || domain.contains('/') || domain.contains(':'))
        {
            return Err(Error::Invalid(format!(
                "the front door's domain `{domain}` must be a bare host name (shop.example.com)"
            )));
        }
        let description = description(sandcastle, service);
        let cloud_run_service = names.base.clone();

        // One serverless NEG per region.
        // In the regions' order, which `state` reports back.
        let mut wanted = Vec::new();
        for region in regions {
            let name = names.neg(region);
            match self.get_neg(region, &name).await? {
                Some(neg) => {
                    let points_at = neg
                        .cloud_run
                        .as_ref()
                        .and_then(|run| run.service.clone())
                        .unwrap_or_default();
                    if points_at != cloud_run_service {
                        return Err(Error::Failed(format!(
                            "the network endpoint group {name} in {region} points at the Cloud Run \
                             service `{points_at}`, not `{cloud_run_service}`; delete it, or rename \
                             the sandcastle"
                        )));
                    }
                }
                None => {
                    progress(format!(
                        "front door: creating network endpoint group {name} in {region}"
                    ));
                    let mut run = NetworkEndpointGroupCloudRun::new();
                    run.service = Some(cloud_run_service.clone());
                    let mut neg = NetworkEndpointGroup::new();
                    neg.name = Some(name.clone());
                    neg.description = Some(description.clone());
                    neg.network_endpoint_type =
                        Some(network_endpoint_group::NetworkEndpointType::Serverless);
                    neg.cloud_run = Some(run);
                    let what = format!("creating the network endpoint group {name} in {region}");
                    let operation = self
                        .calls
                        .call(
                            &what,
                            self.negs
                                .insert()
                                .set_project(&self.project)
                                .set_region(region)
                                .set_body(neg)
                                .send(),
                        )
                        .await?;
                    self.wait(&what, operation, Scope::Region(region)).await?;
                }
            }
            wanted.push(self.neg_path(region, &name));
        }
        let wanted_set = wanted.iter().cloned().collect::<BTreeSet<_>>();
        let backends = || {
            wanted
                .iter()
                .map(|group| {
                    let mut backend = Backend::new();
                    backend.group = Some(group.clone());
                    backend
                })
                .collect::<Vec<_>>()
        };

        // The backend service, with exactly those NEGs.
        match self.get_backend(&names.backend).await? {
            None => {
                progress(format!(
                    "front door: creating backend service {}",
                    names.backend
                ));
                let mut body = BackendService::new();
                body.name = Some(names.backend.clone());
                body.description = Some(description.clone());
                body.load_balancing_scheme =
                    Some(backend_service::LoadBalancingScheme::ExternalManaged);
                body.backends = backends();
                let what = format!("creating the backend service {}", names.backend);
                let operation = self
                    .calls
                    .call(
                        &what,
                        self.backends
                            .insert()
                            .set_project(&self.project)
                            .set_body(body)
                            .send(),
                    )
                    .await?;
                self.wait(&what, operation, Scope::Global).await?;
            }
            Some(existing) => {
                let current = existing
                    .backends
                    .iter()
                    .filter_map(|backend| backend.group.as_deref())
                    .map(|group| path_of(group).to_string())
                    .collect::<BTreeSet<_>>();
                if current != wanted_set {
                    progress(format!(
                        "front door: updating backend service {} to the regions {}",
                        names.backend,
                        regions.join(", ")
                    ));
                    let mut body = BackendService::new();
                    body.backends = backends();
                    body.fingerprint = existing.fingerprint.clone();
                    let what = format!("updating the backend service {}", names.backend);
                    let operation = self
                        .calls
                        .call(
                            &what,
                            self.backends
                                .patch()
                                .set_project(&self.project)
                                .set_backend_service(&names.backend)
                                .set_body(body)
                                .send(),
                        )
                        .await?;
                    self.wait(&what, operation, Scope::Global).await?;
                    // The NEGs of the regions it no longer has: ours are deleted.
                    for group in current.difference(&wanted_set) {
                        let Some(region) = region_of(group) else {
                            continue;
                        };
                        let name = names.neg(&region);
                        if group.rsplit('/').next() == Some(name.as_str()) {
                            self.delete_neg(&region, &name, progress).await?;
                        }
                    }
                }
            }
        }
        let backend_path = self.global_path("backendServices", &names.backend);

        // The URL map: everything to the backend service.
        match self.get_url_map(&names.url_map).await? {
            None => {
                progress(format!("front door: creating URL map {}", names.url_map));
                let mut body = UrlMap::new();
                body.name = Some(names.url_map.clone());
                body.description = Some(description.clone());
                body.default_service = Some(backend_path.clone());
                let what = format!("creating the URL map {}", names.url_map);
                let operation = self
                    .calls
                    .call(
                        &what,
                        self.url_maps
                            .insert()
                            .set_project(&self.project)
                            .set_body(body)
                            .send(),
                    )
                    .await?;
                self.wait(&what, operation, Scope::Global).await?;
            }
            Some(existing) => {
                if existing.default_service.as_deref().map(path_of) != Some(backend_path.as_str()) {
                    progress(format!(
                        "front door: pointing URL map {} at backend service {}",
                        names.url_map, names.backend
                    ));
                    let mut body = UrlMap::new();
                    body.default_service = Some(backend_path.clone());
                    body.fingerprint = existing.fingerprint.clone();
                    let what = format!("updating the URL map {}", names.url_map);
                    let operation = self
                        .calls
                        .call(
                            &what,
                            self.url_maps
                                .patch()
                                .set_project(&self.project)
                                .set_url_map(&names.url_map)
                                .set_body(body)
                                .send(),
                        )
                        .await?;
                    self.wait(&what, operation, Scope::Global).await?;
                }
            }
        }
        let url_map_path = self.global_path("urlMaps", &names.url_map);

        // The proxy: HTTPS with a managed certificate for the domain, else HTTP.
        let proxy_path = match domain {
            Some(domain) => {
                self.ensure_certificate(&names, domain, &description, progress)
                    .await?;
                let certificate_path = self.global_path("sslCertificates", &names.certificate);
                match self.get_https_proxy(&names.https_proxy).await? {
                    None => {
                        progress(format!(
                            "front door: creating target HTTPS proxy {}",
                            names.https_proxy
                        ));
                        let mut body = TargetHttpsProxy::new();
                        body.name = Some(names.https_proxy.clone());
                        body.description = Some(description.clone());
                        body.url_map = Some(url_map_path.clone());
                        body.ssl_certificates = vec![certificate_path];
                        let what = format!("creating the target HTTPS proxy {}", names.https_proxy);
                        let operation = self
                            .calls
                            .call(
                                &what,
                                self.https_proxies
                                    .insert()
                                    .set_project(&self.project)
                                    .set_body(body)
                                    .send(),
                            )
                            .await?;
                        self.wait(&what, operation, Scope::Global).await?;
                    }
                    Some(existing) => {
                        let url_map = existing.url_map.as_deref().map(path_of);
                        let certificates = existing
                            .ssl_certificates
                            .iter()
                            .map(|link| path_of(link))
                            .collect::<Vec<_>>();
                        if url_map != Some(url_map_path.as_str())
                            || certificates != [certificate_path.as_str()]
                        {
                            return Err(Error::Failed(format!(
                                "the target HTTPS proxy {} does not point at {} with the \
                                 certificate {}; run the front door's destroy, then ensure again",
                                names.https_proxy, names.url_map, names.certificate
                            )));
                        }
                    }
                }
                self.global_path("targetHttpsProxies", &names.https_proxy)
            }
            None => {
                match self.get_http_proxy(&names.http_proxy).await? {
                    None => {
                        progress(format!(
                            "front door: creating target HTTP proxy {}",
                            names.http_proxy
                        ));
                        let mut body = TargetHttpProxy::new();
                        body.name = Some(names.http_proxy.clone());
                        body.description = Some(description.clone());
                        body.url_map = Some(url_map_path.clone());
                        let what = format!("creating the target HTTP proxy {}", names.http_proxy);
                        let operation = self
                            .calls
                            .call(
                                &what,
                                self.http_proxies
                                    .insert()
                                    .set_project(&self.project)
                                    .set_body(body)
                                    .send(),
                            )
                            .await?;
                        self.wait(&what, operation, Scope::Global).await?;
                    }
                    Some(existing) => {
                        if existing.url_map.as_deref().map(path_of) != Some(url_map_path.as_str()) {
                            return Err(Error::Failed(format!(
                                "the target HTTP proxy {} does not point at the URL map {}; run \
                                 the front door's destroy, then ensure again",
                                names.http_proxy, names.url_map
                            )));
                        }
                    }
                }
                self.global_path("targetHttpProxies", &names.http_proxy)
            }
        };

        // The global address, reserved so that it outlives the forwarding rule.
        let address = match self.get_address(&names.address).await? {
            Some(address) => address,
            None => {
                progress(format!(
                    "front door: creating global address {}",
                    names.address
                ));
                let mut body = Address::new();
                body.name = Some(names.address.clone());
                body.description = Some(description.clone());
                let what = format!("creating the global address {}", names.address);
                let operation = self
                    .calls
                    .call(
                        &what,
                        self.addresses
                            .insert()
                            .set_project(&self.project)
                            .set_body(body)
                            .send(),
                    )
                    .await?;
                self.wait(&what, operation, Scope::Global).await?;
                self.get_address(&names.address).await?.ok_or_else(|| {
                    Error::Failed(format!(
                        "the global address {} was created but cannot be read",
                        names.address
                    ))
                })?
            }
        };
        let ip = address.address.clone().ok_or_else(|| {
            Error::Failed(format!(
                "the global address {} has no IP address yet",
                names.address
            ))
        })?;

        // The forwarding rule: the address's port to the proxy.
        let port = if domain.is_some() { "443" } else { "80" };
        match self.get_rule(&names.rule).await? {
            None => {
                progress(format!(
                    "front door: creating forwarding rule {} on {ip}:{port}",
                    names.rule
                ));
                let mut body = ForwardingRule::new();
                body.name = Some(names.rule.clone());
                body.description = Some(description.clone());
                body.ip_address = Some(ip.clone());
                body.ip_protocol = Some(forwarding_rule::IPProtocol::Tcp);
                body.port_range = Some(port.to_string());
                body.target = Some(proxy_path.clone());
                body.load_balancing_scheme =
                    Some(forwarding_rule::LoadBalancingScheme::ExternalManaged);
                let what = format!("creating the forwarding rule {}", names.rule);
                let operation = self
                    .calls
                    .call(
                        &what,
                        self.rules
                            .insert()
                            .set_project(&self.project)
                            .set_body(body)
                            .send(),
                    )
                    .await?;
                self.wait(&what, operation, Scope::Global).await?;
            }
            Some(existing) => {
                if existing.target.as_deref().map(path_of) != Some(proxy_path.as_str()) {
                    return Err(Error::Failed(format!(
                        "the forwarding rule {} sends traffic to {}, not {proxy_path} (a front door \
                         with{} a domain); run the front door's destroy, then ensure again",
                        names.rule,
                        existing.target.as_deref().unwrap_or("nothing"),
                        if domain.is_some() { "" } else { "out" }
                    )));
                }
            }
        }
        Ok(FrontDoorState {
            url: match domain {
                Some(domain) => format!("https://{domain}"),
                None => format!("http://{ip}"),
            },
            address: ip,
            regions: regions.to_vec(),
        })
    }

    async fn ensure_certificate(
        &self,
        names: &Names,
        domain: &str,
        description: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<()> {
        match self.get_certificate(&names.certificate).await? {
            Some(existing) => {
                let domains = existing
                    .managed
                    .as_ref()
                    .map(|managed| managed.domains.clone())
                    .unwrap_or_default();
                if domains != [domain] {
                    return Err(Error::Failed(format!(
                        "the SSL certificate {} is for {}, not {domain}; certificates cannot be \
                         changed: run the front door's destroy, then ensure again",
                        names.certificate,
                        if domains.is_empty() {
                            "no managed domain".to_string()
                        } else {
                            domains.join(", ")
                        }
                    )));
                }
                Ok(())
            }
            None => {
                progress(format!(
                    "front door: creating managed SSL certificate {} for {domain}",
                    names.certificate
                ));
                let mut managed = SslCertificateManagedSslCertificate::new();
                managed.domains = vec![domain.to_string()];
                let mut body = SslCertificate::new();
                body.name = Some(names.certificate.clone());
                body.description = Some(description.to_string());
                body.r#type = Some(ssl_certificate::Type::Managed);
                body.managed = Some(managed);
                let what = format!("creating the SSL certificate {}", names.certificate);
                let operation = self
                    .calls
                    .call(
                        &what,
                        self.certificates
                            .insert()
                            .set_project(&self.project)
                            .set_body(body)
                            .send(),
                    )
                    .await?;
                self.wait(&what, operation, Scope::Global).await
            }
        }
    }

    /// What exists now: the address, the regions whose NEGs are behind the backend service; `None`
    /// when there is no forwarding rule.
    pub async fn state(&self, sandcastle: &str, service: &str) -> Result<Option<FrontDoorState>> {
        let names = Names::new(sandcastle, service);
        let Some(rule) = self.get_rule(&names.rule).await? else {
            return Ok(None);
        };
        let mut address = rule.ip_address.clone().unwrap_or_default();
        if address.contains('/') {
            // A reference to the reserved address rather than the address itself.
            let name = address.rsplit('/').next().unwrap_or_default().to_string();
            address = self
                .get_address(&name)
                .await?
                .and_then(|reserved| reserved.address)
                .unwrap_or_default();
        }
        let regions = match self.get_backend(&names.backend).await? {
            Some(backend) => backend
                .backends
                .iter()
                .filter_map(|backend| backend.group.as_deref().and_then(region_of))
                .collect(),
            None => Vec::new(),
        };
        let target = rule.target.as_deref().unwrap_or_default();
        let url = if target.contains("/targetHttpsProxies/") {
            let proxy = target.rsplit('/').next().unwrap_or_default();
            let certificate = match self.get_https_proxy(proxy).await? {
                Some(proxy) => match proxy.ssl_certificates.first() {
                    Some(link) => {
                        self.get_certificate(link.rsplit('/').next().unwrap_or_default())
                            .await?
                    }
                    None => None,
                },
                None => None,
            };
            let domain = certificate
                .and_then(|certificate| certificate.managed)
                .and_then(|managed| managed.domains.into_iter().next());
            format!("https://{}", domain.as_deref().unwrap_or(&address))
        } else {
            format!("http://{address}")
        };
        Ok(Some(FrontDoorState {
            address,
            url,
            regions,
        }))
    }

    /// Deletes everything [`ensure`](Self::ensure) made, in reverse order (forwarding rule, proxy,
    /// certificate, URL map, backend service, NEGs, address), waiting for each operation; what is
    /// already gone is not an error. The NEGs deleted are those of `regions` and those the backend
    /// service still had.
    pub async fn destroy(&self, sandcastle: &str, service: &str, regions: &[String]) -> Result<()> {
        let progress: &(dyn Fn(String) + Send + Sync) = &|_| {};
        let names = Names::new(sandcastle, service);
        let mut neg_regions = regions.iter().cloned().collect::<BTreeSet<_>>();
        if let Some(backend) = self.get_backend(&names.backend).await? {
            neg_regions.extend(
                backend
                    .backends
                    .iter()
                    .filter_map(|backend| backend.group.as_deref().and_then(region_of)),
            );
        }
        macro_rules! delete_global {
            ($client:expr, $setter:ident, $kind:expr, $name:expr) => {{
                let name: &str = $name;
                let what = format!("deleting the {} {name}", $kind);
                let operation = self
                    .calls
                    .found(
                        &what,
                        $client
                            .delete()
                            .set_project(&self.project)
                            .$setter(name)
                            .send(),
                    )
                    .await?;
                if let Some(operation) = operation {
                    progress(format!("front door: deleting {} {name}", $kind));
                    self.wait(&what, operation, Scope::Global).await?;
                }
            }};
        }
        delete_global!(
            self.rules,
            set_forwarding_rule,
            "forwarding rule",
            &names.rule
        );
        delete_global!(
            self.https_proxies,
            set_target_https_proxy,
            "target HTTPS proxy",
            &names.https_proxy
        );
        delete_global!(
            self.http_proxies,
            set_target_http_proxy,
            "target HTTP proxy",
            &names.http_proxy
        );
        delete_global!(
            self.certificates,
            set_ssl_certificate,
            "SSL certificate",
            &names.certificate
        );
        delete_global!(self.url_maps, set_url_map, "URL map", &names.url_map);
        delete_global!(
            self.backends,
            set_backend_service,
            "backend service",
            &names.backend
        );
        for region in &neg_regions {
            self.delete_neg(region, &names.neg(region), progress)
                .await?;
        }
        delete_global!(
            self.addresses,
            set_address,
            "global address",
            &names.address
        );
        Ok(())
    }

    async fn delete_neg(
        &self,
        region: &str,
        name: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<()> {
        let what = format!("deleting the network endpoint group {name} in {region}");
        let operation = self
            .calls
            .found(
                &what,
                self.negs
                    .delete()
                    .set_project(&self.project)
                    .set_region(region)
                    .set_network_endpoint_group(name)
                    .send(),
            )
            .await?;
        if let Some(operation) = operation {
            progress(format!(
                "front door: deleting network endpoint group {name} in {region}"
            ));
            self.wait(&what, operation, Scope::Region(region)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_compare_from_projects_on() {
        assert_eq!(
            path_of("https://www.googleapis.com/compute/v1/projects/p/global/urlMaps/m"),
            "projects/p/global/urlMaps/m"
        );
        assert_eq!(
            region_of("projects/p/regions/europe-west1/networkEndpointGroups/n").as_deref(),
            Some("europe-west1")
        );
        assert_eq!(region_of("projects/p/global/backendServices/b"), None);
    }

    #[test]
    fn names_compute_refuses_are_caught_before_any_call() {
        let names = Names::new("shop", "web");
        assert_eq!(names.backend, "shop-web-backend");
        assert_eq!(names.neg("us-central1"), "shop-web-us-central1");
        assert!(names.check(&["us-central1".to_string()]).is_ok());
        let long = Names::new(&"s".repeat(40), "web");
        assert!(long.check(&[]).is_ok());
        assert!(
            long.check(&["northamerica-northeast1".to_string()])
                .is_err()
        );
        assert!(Names::new("Shop", "web").check(&[]).is_err());
    }
}

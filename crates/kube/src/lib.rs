//! The Kubernetes target: each instance is a pod (one container, `main`). Launch creates the pod and
//! waits until it runs, or reports the cluster's own reason why not; typing goes through `attach`
//! (stdin), the screen is the container's terminal output (its log) rendered by the same virtual
//! terminal as the pty target, side commands go through `exec` over the websocket protocol, and pods are
//! found again by their labels.
//!
//! Native ids are `NAMESPACE/POD`. A launch's environment values never go into the pod, where anyone
//! who may read pods would read them: they go into a Secret named after the pod and owned by it, which
//! the container reads its variables from.

pub mod deploy;
mod manifest;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use mahavishnu_core::config::KubernetesConfig;
use mahavishnu_core::notices::{Followed, OutputNotices};
use mahavishnu_core::{
    Capabilities, Error, ExecOutput, ExecRequest, InputPart, LaunchSpec, Observation, Preflight,
    Result, ScreenOptions, Target, TargetKind, TargetName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use deploy::{ClusterSettings, KubernetesPlatform};
pub use manifest::{MANAGED_BY, SPEC_ANNOTATION, pod_manifest};
use manifest::{REDACTED, Values, env_secret};

const KIND: TargetKind = TargetKind::Kubernetes;
const CONTAINER: &str = "main";
/// The longest a preflight waits for the cluster.
const PREFLIGHT_PATIENCE: Duration = Duration::from_secs(5);
/// The scope of a target that runs inside a pod and reaches its own cluster.
pub const IN_CLUSTER: &str = "in-cluster";
/// Values shorter than this are not scrubbed from messages: such short strings occur in ordinary text,
/// so replacing them would garble every message while hiding nothing (the API server does not echo a
/// Secret's data in its errors anyway; the scrubbing is a second line of defence).
const SHORTEST_SCRUBBED: usize = 4;

/// The Kubernetes target.
#[derive(Clone)]
pub struct KubernetesTarget {
    name: TargetName,
    settings: KubernetesConfig,
    /// Resolved on first use, so commands that never touch the cluster never read a kubeconfig.
    namespace: Arc<std::sync::OnceLock<String>>,
    client: Arc<tokio::sync::OnceCell<Client>>,
    /// Terminal sizes of the pods this process has seen, so a screen needs one API call.
    sizes: Arc<Mutex<BTreeMap<String, (u16, u16)>>>,
    /// Notices of output, from each pod's attach stream.
    notices: OutputNotices,
}

/// How often the follower of output notices looks for new pods.
const LOOK_FOR_PODS: Duration = Duration::from_secs(2);

impl KubernetesTarget {
    /// A target for `settings`; the namespace is the configured one, else the context's, else the
    /// in-cluster one, else `default`. No connection is made until it is needed.
    pub fn new(name: TargetName, settings: KubernetesConfig) -> Self {
        KubernetesTarget {
            name,
            settings,
            namespace: Arc::default(),
            client: Arc::default(),
            sizes: Arc::default(),
            notices: OutputNotices::default(),
        }
    }

    /// The namespace new pods go to.
    pub fn namespace(&self) -> &str {
        self.namespace.get_or_init(|| {
            let settings = &self.settings;
            settings
                .namespace
                .clone()
                .or_else(|| {
                    context_namespace(settings.kubeconfig.as_deref(), settings.context.as_deref())
                })
                .or_else(|| {
                    std::fs::read_to_string(
                        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                    )
                    .ok()
                    .map(|ns| ns.trim().to_string())
                })
                .unwrap_or_else(|| "default".into())
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.request_timeout_ms.max(1000))
    }

    async fn client(&self) -> Result<Client> {
        self.client
            .get_or_try_init(|| async {
                let options = KubeConfigOptions {
                    context: self.settings.context.clone(),
                    ..Default::default()
                };
                let context = self.settings.context.as_deref().unwrap_or("the current context");
                let mut config = match (&self.settings.kubeconfig, &self.settings.context) {
                    (Some(path), _) => {
                        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                            not_ready(&self.name, format!("cannot read {} ({}): {e}", path.display(), self.key("kubeconfig")))
                        })?;
                        Config::from_custom_kubeconfig(kubeconfig, &options)
                            .await
                            .map_err(|e| not_ready(&self.name, format!("{} with {context}: {e}", path.display())))?
                    }
                    (None, Some(_)) => Config::from_kubeconfig(&options)
                        .await
                        .map_err(|e| not_ready(&self.name, format!("kubeconfig with {context}: {e}")))?,
                    (None, None) => Config::infer().await.map_err(|e| {
                        not_ready(&self.name, format!(
                            "no cluster configuration ({e}); set KUBECONFIG, create ~/.kube/config, or run in a pod"
                        ))
                    })?,
                };
                // Unary calls are bounded by `call`; exec and log streams by their own timeouts, so a
                // silent command is not cut off by a read timeout.
                config.connect_timeout = Some(self.timeout());
                config.read_timeout = None;
                Client::try_from(config).map_err(|e| not_ready(&self.name, format!("cannot make a client: {e}")))
            })
            .await
            .cloned()
    }

    async fn pods(&self, namespace: &str) -> Result<Api<Pod>> {
        Ok(Api::namespaced(self.client().await?, namespace))
    }

    async fn secrets(&self, namespace: &str) -> Result<Api<Secret>> {
        Ok(Api::namespaced(self.client().await?, namespace))
    }

    /// The kubeconfig context this target's client uses, resolved the way `client` resolves it, from
    /// files and the environment only.
    fn resolve_scope(&self) -> Result<String> {
        let settings = &self.settings;
        let kubeconfig = match &settings.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|e| {
                not_ready(
                    &self.name,
                    format!(
                        "cannot read {} ({}): {e}",
                        path.display(),
                        self.key("kubeconfig")
                    ),
                )
            })?,
            None => match Kubeconfig::read() {
                Ok(kubeconfig) => kubeconfig,
                // As `Config::infer` does: without a kubeconfig, the pod's own service account.
                Err(_) if settings.context.is_none() && in_cluster() => {
                    return Ok(IN_CLUSTER.into());
                }
                Err(e) => {
                    return Err(not_ready(
                        &self.name,
                        format!(
                            "no kubeconfig ({e}); set KUBECONFIG, create ~/.kube/config, or run in a pod"
                        ),
                    ));
                }
            },
        };
        let context = match (&settings.context, &kubeconfig.current_context) {
            (Some(context), _) => context.clone(),
            (None, Some(current)) if !current.is_empty() => current.clone(),
            (None, _) if settings.kubeconfig.is_none() && in_cluster() => {
                return Ok(IN_CLUSTER.into());
            }
            (None, _) => {
                return Err(not_ready(
                    &self.name,
                    format!(
                        "the kubeconfig has no current-context; set {} or run `kubectl config use-context NAME`",
                        self.key("context")
                    ),
                ));
            }
        };
        if kubeconfig
            .contexts
            .iter()
            .any(|named| named.name == context)
        {
            Ok(context)
        } else {
            Err(not_ready(
                &self.name,
                format!(
                    "context `{context}` is not in the kubeconfig; `kubectl config get-contexts` lists them"
                ),
            ))
        }
    }

    /// Creates the Secret of a launch's environment; returns its uid.
    async fn create_env_secret(&self, secret: &Secret, native: &str) -> Result<Option<String>> {
        let (namespace, _) = split(native)?;
        let secrets = self.secrets(namespace).await?;
        let created = match self
            .call(
                &format!("create Secret {native} (it holds the environment values)"),
                secrets.create(&PostParams::default(), secret),
            )
            .await
        {
            Ok(created) => created,
            Err(Error::Target { message, .. }) if message.contains("AlreadyExists") => {
                return Err(Error::Invalid(format!(
                    "a Secret `{native}` already exists, and the pod's environment values would go there; choose another --name, or delete that Secret if it is a leftover"
                )));
            }
            Err(Error::Target { message, .. }) if message.contains("Forbidden") => {
                return Err(Error::target(
                    &self.name,
                    format!(
                        "{message}; environment values are kept in a Secret, so the account needs to create, get, patch and delete secrets in namespace `{namespace}` (or launch without env)"
                    ),
                ));
            }
            Err(other) => return Err(other),
        };
        Ok(created.metadata.uid)
    }

    /// Deletes the environment Secret of pod `native`: only one Mahavishnu labelled (a Secret of the
    /// same name made by someone else is left alone), and only the one with `uid` when given.
    async fn delete_env_secret(&self, native: &str, uid: Option<String>) -> Result<()> {
        let (namespace, name) = split(native)?;
        let secrets = self.secrets(namespace).await?;
        let what = format!("delete Secret {native}");
        let uid = match uid {
            Some(uid) => uid,
            None => {
                let found = match self.call(&what, secrets.get_opt(name)).await {
                    Ok(found) => found,
                    // An account that may not read Secrets leaves them to the garbage collector,
                    // which deletes the Secret of a pod with it (its owner reference).
                    Err(Error::Target { message, .. }) if message.contains("Forbidden") => {
                        return Ok(());
                    }
                    Err(other) => return Err(other),
                };
                let Some(secret) = found.filter(|secret| {
                    secret
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get(MANAGED_BY))
                        .is_some_and(|value| value == "mahavishnu")
                }) else {
                    return Ok(());
                };
                match secret.metadata.uid {
                    Some(uid) => uid,
                    None => return Ok(()),
                }
            }
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.call(&what, secrets.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(Error::Target { message, .. })
                if message.contains("NotFound") || message.contains("Conflict") =>
            {
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// Creates the pod, makes it the owner of its Secret when there is one, and waits until it runs.
    async fn create_pod(&self, spec: &LaunchSpec, pod: &Pod, secret: bool) -> Result<Observation> {
        let native = spec.id.native();
        let (namespace, name) = split(native)?;
        let pods = self.pods(namespace).await?;
        let created = match self
            .call(
                &format!("create pod {native}"),
                pods.create(&PostParams::default(), pod),
            )
            .await
        {
            Ok(created) => created,
            Err(Error::Target { message, .. }) if message.contains("AlreadyExists") => {
                return Err(Error::Invalid(format!(
                    "a pod `{native}` already exists; choose another --name or close it first"
                )));
            }
            Err(other) => return Err(other),
        };
        if secret && let Err(error) = self.own_secret(native, &created).await {
            // A Secret that cannot be tied to its pod would outlive it; the pod goes instead, so that a
            // failed launch leaves nothing holding the values.
            let _ = self
                .call(
                    &format!("delete pod {native}"),
                    pods.delete(name, &DeleteParams::default()),
                )
                .await;
            return Err(error);
        }
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.insert(native.to_string(), (spec.rows, spec.cols));
        }
        self.wait_running(native).await
    }

    /// Makes `pod` the owner of its Secret, so that the cluster's garbage collector deletes the Secret
    /// with the pod even when Mahavishnu never stops it.
    async fn own_secret(&self, native: &str, pod: &Pod) -> Result<()> {
        let (namespace, name) = split(native)?;
        let uid = pod.metadata.uid.clone().ok_or_else(|| {
            Error::target(
                &self.name,
                format!("the cluster created pod {native} without a uid; its Secret cannot be tied to it"),
            )
        })?;
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": [{
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": name,
                    "uid": uid,
                    "blockOwnerDeletion": true,
                }],
            },
        });
        let secrets = self.secrets(namespace).await?;
        self.call(
            &format!("make pod {native} the owner of its Secret"),
            secrets.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map(|_| ())
    }

    /// Bounds an API call by the request timeout.
    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout(), call).await {
            Ok(result) => result.map_err(|e| api_error(&self.name, what, e)),
            Err(_) => Err(Error::target(
                &self.name,
                format!(
                    "{what}: no answer from the cluster within {:.0}s ({})",
                    self.timeout().as_secs_f64(),
                    self.key("request_timeout_ms")
                ),
            )),
        }
    }

    /// Attaches to the pod's terminal, sets its size if asked, types `bytes`, and lets go.
    async fn type_into(&self, native: &str, bytes: &[u8], size: Option<(u16, u16)>) -> Result<()> {
        let (namespace, name) = split(native)?;
        let pods = self.pods(namespace).await?;
        let params = AttachParams::interactive_tty()
            .container(CONTAINER)
            .stdout(false);
        let mut attached = self
            .call(&format!("attach to {native}"), pods.attach(name, &params))
            .await?;
        if let Some((rows, cols)) = size {
            let mut resizer = attached.terminal_size().ok_or_else(|| {
                Error::target(&self.name, format!("{native} has no terminal to resize"))
            })?;
            use futures::SinkExt;
            let sent = resizer
                .send(kube::api::TerminalSize {
                    width: cols,
                    height: rows,
                })
                .await;
            sent.map_err(|e| Error::target(&self.name, format!("resizing {native}: {e}")))?;
            // The attach's own task sends it; the end of stdin, sent later, could otherwise go first
            // and end the attach. Nothing tells when it went, so it gets a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut stdin = attached.stdin().ok_or_else(|| {
            Error::target(&self.name, format!("{native} has no stdin to type into"))
        })?;
        stdin
            .write_all(bytes)
            .await
            .map_err(|e| Error::target(&self.name, format!("typing into {native}: {e}")))?;
        // Closing our end of stdin sends everything written, then the end-of-stdin signal; a server that
        // then ends the attach tells us all of it arrived. One that keeps it open gets a moment first.
        let ended = attached.take_status();
        drop(stdin);
        if let Some(ended) = ended {
            let _ = tokio::time::timeout(Duration::from_millis(300), ended).await;
        }
        attached.abort();
        Ok(())
    }

    async fn get(&self, native: &str) -> Result<Option<Pod>> {
        let (namespace, name) = split(native)?;
        let pods = self.pods(namespace).await?;
        self.call(&format!("get pod {native}"), pods.get_opt(name))
            .await
    }

    /// A key of this target's configuration, as a user writes it (`targets.prod-eu.context`).
    fn key(&self, key: &str) -> String {
        format!("targets.{}.{key}", self.name)
    }

    /// The error for a pod this target does not know.
    fn unknown(&self, native: &str) -> Error {
        Error::UnknownInstance {
            id: format!("{}:{native}", self.name.id_prefix()),
        }
    }

    fn size_of(&self, native: &str, pod: Option<&Pod>) -> (u16, u16) {
        if let Some(size) = self.sizes.lock().ok().and_then(|s| s.get(native).copied()) {
            return size;
        }
        let size = pod
            .and_then(manifest::spec_of)
            .map_or((50, 200), |spec| (spec.rows, spec.cols));
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.insert(native.to_string(), size);
        }
        size
    }

    /// Mahavishnu's pods, found by label: in every namespace where the account may list pods, else in
    /// the target's own namespace.
    async fn managed_pods(&self) -> Result<Vec<Pod>> {
        let client = self.client().await?;
        let selector = ListParams::default().labels(&format!("{MANAGED_BY}=mahavishnu"));
        let everywhere: Api<Pod> = Api::all(client.clone());
        let listed = match self.call("list pods", everywhere.list(&selector)).await {
            Ok(list) => list,
            Err(_) => {
                let here: Api<Pod> = Api::namespaced(client, self.namespace());
                self.call("list pods", here.list(&selector)).await?
            }
        };
        Ok(listed.items)
    }

    /// Waits until the pod runs (or has already ended), failing with the cluster's reason.
    async fn wait_running(&self, native: &str) -> Result<Observation> {
        let limit = Duration::from_millis(self.settings.startup_timeout_ms.max(1000));
        let started = Instant::now();
        let mut last = String::from("not created yet");
        while started.elapsed() < limit {
            if let Some(pod) = self.get(native).await? {
                match manifest::startup(&pod) {
                    manifest::Startup::Running(observation)
                    | manifest::Startup::Ended(observation) => {
                        return Ok(Observation {
                            native: native.to_string(),
                            ..observation
                        });
                    }
                    manifest::Startup::Failed(reason) => {
                        return Err(Error::target(
                            &self.name,
                            format!("pod {native} cannot run: {reason}"),
                        ));
                    }
                    manifest::Startup::Pending(state) => last = state,
                }
            }
            tokio::time::sleep(Duration::from_millis(
                if started.elapsed() < Duration::from_secs(2) {
                    20
                } else {
                    250
                },
            ))
            .await;
        }
        Err(Error::target(
            &self.name,
            format!(
                "pod {native} did not run within {:.0}s ({}); last: {last}",
                limit.as_secs_f64(),
                self.key("startup_timeout_ms")
            ),
        ))
    }
}

/// The namespace of a kubeconfig context (the current one when `context` is None).
fn context_namespace(path: Option<&std::path::Path>, context: Option<&str>) -> Option<String> {
    let kubeconfig = match path {
        Some(path) => Kubeconfig::read_from(path).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let name = context
        .map(str::to_string)
        .or_else(|| kubeconfig.current_context.clone())?;
    kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == name)?
        .context
        .as_ref()?
        .namespace
        .clone()
}

/// Whether this process runs in a pod, as `Config::incluster` decides.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|host| !host.is_empty())
}

/// `error` with every environment value of a launch replaced by `<redacted>`, so that a message that
/// reaches a terminal, the event log or the store never carries one.
fn scrub(error: Error, env: &BTreeMap<String, String>) -> Error {
    let mut values: Vec<&str> = env
        .values()
        .map(String::as_str)
        .filter(|value| value.len() >= SHORTEST_SCRUBBED)
        .collect();
    // Longest first, so that a value containing another is replaced whole.
    values.sort_by_key(|value| std::cmp::Reverse(value.len()));
    let clean = |text: String| {
        values
            .iter()
            .fold(text, |text, value| text.replace(value, REDACTED))
    };
    match error {
        Error::Target { target, message } => Error::Target {
            target,
            message: clean(message),
        },
        Error::TargetNotReady { target, reason } => Error::TargetNotReady {
            target,
            reason: clean(reason),
        },
        Error::Invalid(message) => Error::Invalid(clean(message)),
        Error::Failed(message) => Error::Failed(clean(message)),
        other => other,
    }
}

fn not_ready(target: &TargetName, reason: String) -> Error {
    Error::TargetNotReady {
        target: target.clone(),
        reason,
    }
}

/// A kube error as a message that names what was being done and the cluster's own words.
fn api_error(target: &TargetName, what: &str, error: kube::Error) -> Error {
    match error {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", status.reason)
            };
            Error::target(target, format!("{what}: {}{reason}", status.message))
        }
        other => Error::target(target, format!("{what}: {other}")),
    }
}

/// `NAMESPACE/POD` into its parts.
fn split(native: &str) -> Result<(&str, &str)> {
    native
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| Error::InvalidId {
            id: native.to_string(),
            reason: "a Kubernetes instance is named `NAMESPACE/POD` after its target's name".into(),
        })
}

#[async_trait]
impl Target for KubernetesTarget {
    fn name(&self) -> &TargetName {
        &self.name
    }

    fn kind(&self) -> TargetKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            screen: true,
            send: true,
            exec: true,
            logs: true,
            recover: true,
            attach: false,
            persistent: true,
            host_processes: false,
        }
    }

    fn location(&self) -> String {
        let context = self
            .settings
            .context
            .clone()
            .unwrap_or_else(|| "the current context".into());
        format!("{context}, namespace `{}`", self.namespace())
    }

    fn native_name(&self, name: &str) -> String {
        format!("{}/{}", self.namespace(), name)
    }

    async fn preflight(&self) -> Preflight {
        let verdict = async {
            let client = self.client().await?;
            let version = self
                .call("ask the cluster's version", client.apiserver_version())
                .await?;
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            if self
                .call("read the namespace", namespaces.get_opt(self.namespace()))
                .await?
                .is_none()
            {
                return Err(not_ready(
                    &self.name,
                    format!(
                        "namespace `{}` does not exist; create it or set {}",
                        self.namespace(),
                        self.key("namespace")
                    ),
                ));
            }
            let review = manifest::access_review(self.namespace());
            let reviews: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
                Api::all(client);
            let answer = self
                .call(
                    "ask whether pods may be created",
                    reviews.create(&PostParams::default(), &review),
                )
                .await?;
            if !answer.status.is_some_and(|status| status.allowed) {
                return Err(not_ready(
                    &self.name,
                    format!(
                        "not allowed to create pods in namespace `{}`",
                        self.namespace()
                    ),
                ));
            }
            Ok(format!(
                "cluster {} reachable; namespace `{}`; may create pods",
                version.git_version,
                self.namespace()
            ))
        };
        // A preflight stays cheap: an unreachable cluster is reported after a few seconds.
        let patience = self.timeout().min(PREFLIGHT_PATIENCE);
        let verdict = match tokio::time::timeout(patience, verdict).await {
            Ok(verdict) => verdict,
            Err(_) => Err(not_ready(
                &self.name,
                format!(
                    "the cluster did not answer within {:.0}s; check the kubeconfig's server address and the network",
                    patience.as_secs_f64()
                ),
            )),
        };
        match verdict {
            Ok(detail) => Preflight {
                target: self.name.clone(),
                ready: true,
                detail,
            },
            Err(Error::TargetNotReady { reason, .. }) => Preflight {
                target: self.name.clone(),
                ready: false,
                detail: reason,
            },
            Err(other) => Preflight {
                target: self.name.clone(),
                ready: false,
                detail: other.to_string(),
            },
        }
    }

    async fn scope(&self) -> Result<Option<String>> {
        self.resolve_scope().map(Some)
    }

    /// The pod, or, when the launch has env, a `List` of its Secret (values redacted) and the pod.
    async fn plan(&self, spec: &LaunchSpec) -> Result<serde_json::Value> {
        let show = |e: serde_json::Error| Error::Invalid(format!("cannot show the manifest: {e}"));
        let pod = serde_json::to_value(pod_manifest(spec, &self.settings)?).map_err(show)?;
        match env_secret(spec, Values::Redacted)? {
            None => Ok(pod),
            Some(secret) => Ok(serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [serde_json::to_value(secret).map_err(show)?, pod],
            })),
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observation> {
        let launched = async {
            let native = spec.id.native();
            split(native)?;
            let pod = pod_manifest(spec, &self.settings)?;
            let Some(secret) = env_secret(spec, Values::Real)? else {
                return self.create_pod(spec, &pod, false).await;
            };
            // The Secret first, so that the container finds its values when it starts.
            let uid = self.create_env_secret(&secret, native).await?;
            let launched = self.create_pod(spec, &pod, true).await;
            if launched.is_err() {
                // Only the Secret made here (by its uid), never one of the same name made since.
                let _ = self.delete_env_secret(native, uid).await;
            }
            launched
        };
        launched.await.map_err(|error| scrub(error, &spec.env))
    }

    async fn inspect(&self, native: &str) -> Result<Option<Observation>> {
        Ok(self.get(native).await?.map(|pod| manifest::observe(&pod)))
    }

    async fn list(&self) -> Result<Vec<Observation>> {
        Ok(self
            .managed_pods()
            .await?
            .iter()
            .map(manifest::observe)
            .collect())
    }

    async fn exec(&self, native: &str, request: &ExecRequest) -> Result<ExecOutput> {
        let (namespace, name) = split(native)?;
        if request.command.is_empty() {
            return Err(Error::Invalid(
                "no command given; pass it after `--`, e.g. `-- ls -la`".into(),
            ));
        }
        let pods = self.pods(namespace).await?;
        let started = Instant::now();
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let run = async {
            let mut process = self
                .call(
                    &format!("exec in {native}"),
                    pods.exec(name, request.command.clone(), &params),
                )
                .await?;
            let mut stdout = process.stdout();
            let mut stderr = process.stderr();
            let status = process.take_status();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(stdout) = stdout.as_mut() {
                    let _ = stdout.read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(stderr) = stderr.as_mut() {
                    let _ = stderr.read_to_end(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            Ok::<_, Error>((manifest::exit_code_of(status.as_ref()), out, err))
        };
        match tokio::time::timeout(request.timeout, run).await {
            Ok(result) => {
                let (code, out, err) = result?;
                Ok(ExecOutput::finished(Some(code), &out, &err, started))
            }
            Err(_) => Ok(ExecOutput::timed_out(request.timeout, started)),
        }
    }

    async fn send(&self, native: &str, input: &[InputPart]) -> Result<()> {
        let bytes: Vec<u8> = input.iter().flat_map(InputPart::to_bytes).collect();
        self.type_into(native, &bytes, None).await
    }

    /// Resized through an attach's resize channel, as `kubectl attach -t` does when its window changes.
    async fn resize(&self, native: &str, rows: u16, cols: u16) -> Result<()> {
        self.type_into(native, &[], Some((rows, cols))).await?;
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.insert(native.to_string(), (rows, cols));
        }
        Ok(())
    }

    /// Pods tell of output on their attach streams.
    fn screen_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.notices.subscribe(self, LOOK_FOR_PODS)
    }

    async fn screen(&self, native: &str, options: ScreenOptions) -> Result<String> {
        let (namespace, name) = split(native)?;
        let pods = self.pods(namespace).await?;
        // The pod (for its terminal size, and to tell a missing pod) and its output, asked at once:
        // a screen costs one round trip to the cluster.
        let what = format!("get pod {native}");
        let (pod, log) = tokio::join!(self.call(&what, pods.get_opt(name)), self.logs(native));
        let pod = pod?.ok_or_else(|| self.unknown(native))?;
        let (rows, cols) = self.size_of(native, Some(&pod));
        let log = log?;
        let size = |n: u16, least: u16| {
            std::num::NonZeroU16::new(n.max(least)).unwrap_or(std::num::NonZeroU16::MIN)
        };
        let mut parser = vt100::Parser::new(size(rows, 2), size(cols, 10), 10_000);
        parser.process(log.as_bytes());
        Ok(mahavishnu_screen::render(&mut parser, options))
    }

    /// The screens of several pods, asked of the cluster at once (at most 32 at a time).
    async fn screens(&self, natives: &[String]) -> Vec<Result<String>> {
        use futures::StreamExt;
        let screens: Vec<_> = natives
            .iter()
            .map(|native| self.screen(native, ScreenOptions::default()))
            .collect();
        futures::stream::iter(screens).buffered(32).collect().await
    }

    async fn logs(&self, native: &str) -> Result<String> {
        let (namespace, name) = split(native)?;
        let pods = self.pods(namespace).await?;
        let params = LogParams {
            container: Some(CONTAINER.into()),
            ..Default::default()
        };
        self.call(
            &format!("read the log of {native}"),
            pods.logs(name, &params),
        )
        .await
    }

    async fn stop(&self, native: &str, grace: Duration) -> Result<()> {
        let (namespace, name) = split(native)?;
        let pods = self.pods(namespace).await?;
        let params = DeleteParams {
            grace_period_seconds: Some(
                grace.as_secs().max(if grace.is_zero() { 0 } else { 1 }) as u32
            ),
            ..Default::default()
        };
        let deleting = match self
            .call(&format!("delete pod {native}"), pods.delete(name, &params))
            .await
        {
            Ok(_) => true,
            Err(Error::Target { message, .. }) if message.contains("NotFound") => false,
            Err(other) => return Err(other),
        };
        // The garbage collector deletes the Secret with its pod too; deleting it here does not depend
        // on a collector running, and catches a Secret left by a launch that stopped half way.
        self.delete_env_secret(native, None).await?;
        if !deleting {
            return Ok(());
        }
        let deadline = Instant::now() + grace + self.timeout();
        while Instant::now() < deadline {
            if self.get(native).await?.is_none() {
                if let Ok(mut sizes) = self.sizes.lock() {
                    sizes.remove(native);
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::target(
            &self.name,
            format!("pod {native} is still there after its grace period; it is being deleted"),
        ))
    }

    async fn recover(&self) -> Result<Vec<LaunchSpec>> {
        Ok(self
            .managed_pods()
            .await?
            .iter()
            .filter_map(|pod| manifest::adoptable_spec(pod, &self.name))
            .collect())
    }
}

#[async_trait]
impl Followed for KubernetesTarget {
    /// Running pods of sessions (pods of deployments carry no launch spec).
    async fn followable(&self) -> Vec<String> {
        let Ok(pods) = self.managed_pods().await else {
            return Vec::new();
        };
        pods.iter()
            .filter(|pod| manifest::spec_of(pod).is_some())
            .map(manifest::observe)
            .filter(|observed| observed.status == mahavishnu_core::ObservedStatus::Running)
            .map(|observed| observed.native)
            .collect()
    }

    async fn follow(&self, native: &str, output: &mut (dyn FnMut() -> bool + Send)) {
        let Ok((namespace, name)) = split(native) else {
            return;
        };
        let Ok(pods) = self.pods(namespace).await else {
            return;
        };
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(false)
            .stdout(true)
            .stderr(false)
            .tty(true);
        let Ok(mut attached) = pods.attach(name, &params).await else {
            return;
        };
        let Some(mut stdout) = attached.stdout() else {
            return;
        };
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(n) = stdout.read(&mut chunk).await {
            if n == 0 || !output() {
                break;
            }
        }
        attached.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two contexts of one kubeconfig, both pointing at `server`, `east` the current one.
    fn two_contexts(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: east\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
             contexts:\n- name: east\n  context:\n    cluster: c\n    user: u\n- name: west\n  context:\n    cluster: c\n    user: u\n\
             users:\n- name: u\n  user:\n    token: t\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn scopes_are_the_contexts_and_resolving_them_reaches_no_cluster() {
        // A listener that would see any connection made to the cluster.
        let cluster = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        cluster.set_nonblocking(true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = two_contexts(
            dir.path(),
            &format!("http://{}", cluster.local_addr().unwrap()),
        );
        let target = |context: Option<&str>| {
            KubernetesTarget::new(
                TargetName::builtin(TargetKind::Kubernetes),
                KubernetesConfig {
                    kubeconfig: Some(kubeconfig.clone()),
                    context: context.map(String::from),
                    ..Default::default()
                },
            )
        };
        let current = target(None).scope().await.unwrap();
        let west = target(Some("west")).scope().await.unwrap();
        assert_eq!(current.as_deref(), Some("east"), "the current context");
        assert_eq!(west.as_deref(), Some("west"));
        assert_ne!(current, west, "two contexts, two scopes");
        let error = target(Some("north")).scope().await.unwrap_err().to_string();
        assert!(
            error.contains("`north`") && error.contains("get-contexts"),
            "{error}"
        );
        assert!(
            matches!(cluster.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "resolving a scope contacted the cluster"
        );
    }

    #[test]
    fn messages_lose_the_env_values() {
        let env = BTreeMap::from([
            ("TOKEN".to_string(), "s3cr3t-value".to_string()),
            ("DEBUG".to_string(), "1".to_string()),
        ]);
        let error = scrub(
            Error::target(
                &TargetName::builtin(TargetKind::Kubernetes),
                "create Secret dev/mv-1: bad value \"s3cr3t-value\"",
            ),
            &env,
        )
        .to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(
            error.contains("dev/mv-1") && error.contains(REDACTED),
            "{error}"
        );
    }

    #[test]
    fn ids_split_into_namespace_and_pod() {
        assert_eq!(split("dev/mv-1").unwrap(), ("dev", "mv-1"));
        for bad in ["mv-1", "/mv-1", "dev/", "a/b/c"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}

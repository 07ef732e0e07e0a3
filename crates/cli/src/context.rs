//! Builds the services a command needs from the configuration and the environment.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use mahavishnu_core::config::{ConfigLoader, LoadedConfig};
use mahavishnu_core::deploy::{Manifest, Platform};
use mahavishnu_core::store::Store;
use mahavishnu_core::{Target, TargetKind, TargetName, paths};
use mahavishnu_deploy::Deployments;
use mahavishnu_local::LocalPlatform;
use mahavishnu_orchestrator::Orchestrator;
use mahavishnu_terminal::{PtyTarget, TmuxTarget};

use crate::cli::GlobalArgs;

/// The store, opened in the state directory with the tables of every crate that owns some.
pub fn store(global: &GlobalArgs) -> Result<Store> {
    Ok(Store::open_with(
        &paths::state_dir(global.state_dir.as_deref())?,
        &[
            mahavishnu_lifecycle::store::MIGRATIONS,
            mahavishnu_deploy::MIGRATIONS,
            mahavishnu_workflows::MIGRATIONS,
        ],
    )?)
}

/// The merged configuration for the current directory; the project file's trust is read from `store`.
pub fn load_config(store: &Store) -> Result<LoadedConfig> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(ConfigLoader::standard(&cwd, store)?)
}

/// Whether this process holds a tmux control client for each tmux target (`serve` does).
static HOLD_TMUX_CONTROL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the targets built from now on start a control client for their tmux server, which their
/// reads (list, screens) then go through instead of a tmux process each; `serve` calls it first.
pub fn hold_tmux_control() {
    HOLD_TMUX_CONTROL.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Every configured target, by name, made for the state directory of `store`: a state directory of
/// its own gets tmux servers and pty sockets of its own (unless the config names the server).
pub fn targets(config: &LoadedConfig, store: &Store) -> Result<Vec<Arc<dyn Target>>> {
    let tag = store.path().parent().and_then(paths::isolation_tag);
    let runtime_dir = runtime_dir(store)?;
    let host = std::env::current_exe()
        .context("cannot find the mahavishnu executable for the pty host")?;
    let mut targets: Vec<Arc<dyn Target>> = Vec::new();
    for (name, kind, settings) in config.config.targets.all() {
        let name = TargetName::new(name)?;
        match kind {
            TargetKind::Tmux => {
                let tmux = settings.tmux();
                let configured = config
                    .origins
                    .get(&format!("targets.{name}.socket_name"))
                    .is_some_and(|origin| origin != "built-in");
                let mut socket_name = tmux
                    .socket_name
                    .clone()
                    .unwrap_or_else(|| format!("mahavishnu-{name}"));
                if let Some(tag) = tag.as_ref().filter(|_| !configured) {
                    socket_name = format!("{socket_name}-{tag}");
                }
                let target = TmuxTarget::new(
                    name,
                    &tmux.program,
                    &socket_name,
                    tmux.scrollback,
                    &runtime_dir,
                );
                if HOLD_TMUX_CONTROL.load(std::sync::atomic::Ordering::SeqCst) {
                    mahavishnu_terminal::tmux_control::start(target.program(), &socket_name);
                }
                targets.push(Arc::new(target));
            }
            TargetKind::Pty => targets.push(Arc::new(PtyTarget::new(
                name,
                &runtime_dir,
                host.clone(),
                settings.pty().scrollback,
            ))),
            #[cfg(feature = "kubernetes")]
            TargetKind::Kubernetes => targets.push(Arc::new(
                mahavishnu_kube::KubernetesTarget::new(name, settings.kubernetes()),
            )),
            #[cfg(not(feature = "kubernetes"))]
            TargetKind::Kubernetes => {}
            // Headless instances, each a Cloud Run job of its own.
            #[cfg(feature = "cloudrun")]
            // A mistake in one such target leaves the others working, and says so.
            TargetKind::Cloudrun => {
                match mahavishnu_cloudrun::CloudRunSettings::for_target(name.as_str(), settings) {
                    Ok(cloud) => targets.push(Arc::new(mahavishnu_cloudrun::CloudRunTarget::new(
                        name.clone(),
                        cloud,
                    ))),
                    Err(e) => eprintln!("warning: the target `{name}` is left out: {e}"),
                }
            }
            #[cfg(not(feature = "cloudrun"))]
            TargetKind::Cloudrun => {}
        }
    }
    Ok(targets)
}

/// The runtime directory of the state directory of `store`: a state directory of its own gets sockets
/// of its own.
fn runtime_dir(store: &Store) -> Result<PathBuf> {
    let mut runtime_dir = paths::runtime_dir()?;
    if let Some(tag) = store.path().parent().and_then(paths::isolation_tag) {
        runtime_dir = runtime_dir.join(format!("state-{tag}"));
        paths::ensure_private_dir(&runtime_dir)?;
    }
    Ok(runtime_dir)
}

/// Deployments over every platform this build has, with the journal in `store`.
pub fn deployments_over(store: Arc<Store>) -> Result<Arc<Deployments>> {
    let state_dir = store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("the store has no directory")?;
    let program = std::env::current_exe()
        .context("cannot find the mahavishnu executable for the deploy supervisor")?;
    let local: Arc<dyn Platform> = Arc::new(LocalPlatform::new(
        runtime_dir(&store)?,
        state_dir.clone(),
        program,
    ));
    let bus = crate::bus::provider(&state_dir);
    #[cfg(any(feature = "cloudrun", feature = "kubernetes"))]
    let targets = load_config(&store)?.config.targets.clone();
    let deployments = Deployments::new(store, vec![local], bus, state_dir.join("deploy-locks"));
    #[cfg(feature = "cloudrun")]
    let deployments = deployments.with_provider(Arc::new(crate::cloudrun::CloudRunProvider::new(
        targets.clone(),
    )));
    #[cfg(feature = "kubernetes")]
    let deployments = deployments.with_provider(Arc::new(
        crate::kubernetes::KubernetesProvider::new(targets),
    ));
    Ok(Arc::new(deployments))
}

/// Deployments, with the store opened.
pub fn deployments(global: &GlobalArgs) -> Result<Arc<Deployments>> {
    deployments_over(Arc::new(store(global)?))
}

/// The deploy manifest: `file`, or the one found from the current directory.
pub fn manifest(file: Option<&std::path::Path>) -> Result<Manifest> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let path = match file {
        Some(file) => cwd.join(file),
        None => Manifest::find(&cwd)?,
    };
    Ok(Manifest::load(&path)?)
}

/// The orchestrator over every target, with the store opened.
pub fn orchestrator(global: &GlobalArgs) -> Result<Orchestrator> {
    orchestrator_with(global, |_| {})
}

/// The orchestrator, with the configuration adjusted first (by flags such as `--namespace`).
pub fn orchestrator_with(
    global: &GlobalArgs,
    adjust: impl FnOnce(&mut LoadedConfig),
) -> Result<Orchestrator> {
    let store = store(global)?;
    if !HOLD_TMUX_CONTROL.load(std::sync::atomic::Ordering::SeqCst)
        && let Some(state_dir) = store.path().parent()
    {
        crate::serve_relay::use_running_serve(state_dir);
    }
    let mut config = load_config(&store)?;
    adjust(&mut config);
    let targets = targets(&config, &store)?;
    #[cfg(feature = "kubernetes")]
    let settings = config.config.targets.clone();
    let orchestrator = Orchestrator::new(Arc::new(config), Arc::new(store), targets);
    // An instance made in another kubeconfig context than its target reaches now (the built-in
    // target follows the current context) is reached through a copy of the target for that context.
    #[cfg(feature = "kubernetes")]
    let orchestrator = orchestrator.with_scoped_targets(Arc::new(move |name, context| {
        let (kind, target) = settings.get(name.as_str())?;
        if kind != TargetKind::Kubernetes {
            return None;
        }
        let mut kubernetes = target.kubernetes();
        kubernetes.context = Some(context.to_string());
        let target: Arc<dyn Target> = Arc::new(mahavishnu_kube::KubernetesTarget::new(
            name.clone(),
            kubernetes,
        ));
        Some(target)
    }));
    Ok(orchestrator)
}

/// The operations every face offers, over the orchestrator, from the current directory.
pub fn api(global: &GlobalArgs) -> Result<mahavishnu_api::Api> {
    api_over(orchestrator(global)?)
}

/// The operations over `orchestrator` (one made with adjustments, say), from the current directory.
pub fn api_over(orchestrator: Orchestrator) -> Result<mahavishnu_api::Api> {
    let (cwd, home) = places()?;
    let deployments = deployments_over(orchestrator.shared_store())?;
    Ok(mahavishnu_api::Api::new(Arc::new(orchestrator), cwd, home).with_deployments(deployments))
}

/// The current directory, and the user's home directory when HOME is set.
pub fn places() -> Result<(PathBuf, Option<PathBuf>)> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from);
    Ok((cwd, home))
}

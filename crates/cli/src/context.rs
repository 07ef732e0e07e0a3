//! Builds the services a command needs from the configuration and the environment.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use mahavishnu_core::config::{ConfigLoader, LoadedConfig};
use mahavishnu_core::store::Store;
use mahavishnu_core::{Target, paths};
use mahavishnu_orchestrator::Orchestrator;
use mahavishnu_terminal::{PtyTarget, TmuxTarget};

use crate::cli::GlobalArgs;

/// The store, opened in the state directory.
pub fn store(global: &GlobalArgs) -> Result<Store> {
    Ok(Store::open(&paths::state_dir(
        global.state_dir.as_deref(),
    )?)?)
}

/// The merged configuration for the current directory; the project file's trust is read from `store`.
pub fn load_config(store: &Store) -> Result<LoadedConfig> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(ConfigLoader::standard(&cwd, store)?)
}

/// The targets this build offers, configured, for the state directory of `store`: a state directory
/// of its own gets a tmux server and pty sockets of its own (unless the config names the server).
pub fn targets(config: &LoadedConfig, store: &Store) -> Result<(TmuxTarget, PtyTarget)> {
    let settings = &config.config.targets;
    let tag = store.path().parent().and_then(paths::isolation_tag);
    let mut runtime_dir = paths::runtime_dir()?;
    let mut socket_name = settings.tmux.socket_name.clone();
    if let Some(tag) = &tag {
        runtime_dir = runtime_dir.join(format!("state-{tag}"));
        paths::ensure_private_dir(&runtime_dir)?;
        if config
            .origins
            .get("targets.tmux.socket_name")
            .is_none_or(|origin| origin == "built-in")
        {
            socket_name = format!("{socket_name}-{tag}");
        }
    }
    let tmux = TmuxTarget::new(
        &settings.tmux.program,
        &socket_name,
        settings.pty.scrollback,
        &runtime_dir,
    );
    let host = std::env::current_exe()
        .context("cannot find the mahavishnu executable for the pty host")?;
    let pty = PtyTarget::new(&runtime_dir, host, settings.pty.scrollback);
    Ok((tmux, pty))
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
    let mut config = load_config(&store)?;
    adjust(&mut config);
    let (tmux, pty) = targets(&config, &store)?;
    #[allow(unused_mut)]
    let mut targets: Vec<Arc<dyn Target>> = vec![Arc::new(tmux), Arc::new(pty)];
    #[cfg(feature = "kubernetes")]
    targets.push(Arc::new(mahavishnu_kube::KubernetesTarget::new(
        config.config.targets.kubernetes.clone(),
    )));
    #[cfg(feature = "kubernetes")]
    let kubernetes = config.config.targets.kubernetes.clone();
    let orchestrator = Orchestrator::new(Arc::new(config), Arc::new(store), targets);
    // An instance made in another kubeconfig context is reached through a target for that context.
    #[cfg(feature = "kubernetes")]
    let orchestrator = orchestrator.with_scoped_targets(Arc::new(move |kind, context| {
        if kind != mahavishnu_core::TargetKind::Kubernetes {
            return None;
        }
        let mut settings = kubernetes.clone();
        settings.context = Some(context.to_string());
        let target: Arc<dyn Target> = Arc::new(mahavishnu_kube::KubernetesTarget::new(settings));
        Some(target)
    }));
    Ok(orchestrator)
}

/// The operations every face offers, over the orchestrator, from the current directory.
pub fn api(global: &GlobalArgs) -> Result<mahavishnu_api::Api> {
    let orchestrator = Arc::new(orchestrator(global)?);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(std::path::PathBuf::from);
    Ok(mahavishnu_api::Api::new(orchestrator, cwd, home))
}

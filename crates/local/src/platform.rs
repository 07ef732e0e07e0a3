//! `LocalPlatform`: the `Platform` trait over supervisors. A supervisor is started on demand (the
//! first deploy to a placement, or the first look at a placement whose supervisor died: that is how a
//! crashed supervisor is re-adopted), and reached on its socket for everything else.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use mahavishnu_core::deploy::{
    FrontDoorStatus, Health, Observed, Placement, Platform, PlatformCapabilities, PlatformKind,
    Progress, RevisionSpec, SecretValues,
};
use mahavishnu_core::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::protocol::{Address, Reply, Request, Snapshot};

/// How many log lines a failed wait shows.
const FAILURE_LINES: usize = 15;

/// The local platform: processes on this machine.
#[derive(Clone, Debug)]
pub struct LocalPlatform {
    runtime_dir: PathBuf,
    state_dir: PathBuf,
    program: PathBuf,
}

impl LocalPlatform {
    /// Supervisors keep sockets in `runtime_dir/deploy`, state and logs in `state_dir/deploy`, and are
    /// started as `program __deploy-supervisor`.
    pub fn new(runtime_dir: PathBuf, state_dir: PathBuf, program: PathBuf) -> Self {
        LocalPlatform {
            runtime_dir,
            state_dir,
            program,
        }
    }

    /// Where the supervisor of a placement (or, `region` `None`, of a front door) lives.
    pub fn address(&self, sandcastle: &str, region: Option<&str>) -> Address {
        Address::new(&self.runtime_dir, &self.state_dir, sandcastle, region)
    }

    /// The sandcastles and regions that have a supervisor's state here.
    pub fn placements(&self) -> Vec<Placement> {
        let mut found = Vec::new();
        let root = self.state_dir.join("deploy");
        for sandcastle in read_dir_names(&root) {
            for region in read_dir_names(&root.join(&sandcastle)) {
                if !region.starts_with('@') {
                    found.push(Placement {
                        sandcastle: sandcastle.clone(),
                        region,
                    });
                }
            }
        }
        found
    }

    /// Asks the supervisor; starts it first when `start` and it does not answer.
    async fn call(
        &self,
        address: &Address,
        request: &Request,
        start: bool,
    ) -> Result<serde_json::Value> {
        let stream = match UnixStream::connect(&address.socket).await {
            Ok(stream) => stream,
            Err(_) if start => {
                self.start_supervisor(address).await?;
                UnixStream::connect(&address.socket).await.map_err(|e| {
                    Error::io(
                        format!(
                            "cannot reach the supervisor at {}",
                            address.socket.display()
                        ),
                        e,
                    )
                })?
            }
            Err(e) => {
                return Err(Error::io(
                    format!("no supervisor answers at {}", address.socket.display()),
                    e,
                ));
            }
        };
        let (line, _, _) = exchange(stream, request).await?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Ok(value)) => Ok(value),
            Ok(Reply::Error(message)) => Err(Error::Failed(message)),
            Err(_) => Err(Error::Failed(format!(
                "the supervisor at {} hung up without an answer; its log is {}",
                address.socket.display(),
                address.supervisor_log().display()
            ))),
        }
    }

    async fn start_supervisor(&self, address: &Address) -> Result<()> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("__deploy-supervisor")
            .arg("--socket")
            .arg(&address.socket)
            .arg("--dir")
            .arg(&address.dir);
        // The supervisor lives on after this command; nothing of the caller's environment but what
        // its processes are given (it may hold the caller's credentials, or a secret's value).
        command.env_clear();
        for name in crate::copies::PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let first = mahavishnu_core::process::start_detached(&mut command, Duration::from_secs(10))
            .await
            .map_err(|e| {
                Error::io(
                    format!("cannot start the supervisor {}", self.program.display()),
                    e,
                )
            })?;
        match first {
            Some(first) if first.starts_with("ready ") => Ok(()),
            Some(first) if first.contains("already runs") => {
                // Another command started it a moment ago; wait until it answers.
                for _ in 0..50 {
                    if UnixStream::connect(&address.socket).await.is_ok() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(Error::Failed(format!(
                    "a supervisor holds {} but does not answer on {}",
                    address.lock().display(),
                    address.socket.display()
                )))
            }
            Some(first) => Err(Error::Failed(format!(
                "the supervisor did not start: {}",
                first.strip_prefix("error: ").unwrap_or(&first)
            ))),
            None => Err(Error::Failed("the supervisor did not start in 10 s".into())),
        }
    }

    async fn snapshot(&self, at: &Placement) -> Result<Option<Snapshot>> {
        let address = self.address(&at.sandcastle, Some(&at.region));
        // A placement with a state file but no supervisor lost its supervisor: start it again, which
        // re-adopts what it ran.
        let start = address.state().exists();
        match self.call(&address, &Request::Observe, start).await {
            Ok(value) => serde_json::from_value(value).map(Some).map_err(|e| {
                Error::Failed(format!("the supervisor's answer is not a snapshot: {e}"))
            }),
            Err(_) if !start => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn last_lines(&self, at: &Placement, service: &str, revision: &str) -> Vec<String> {
        use futures::StreamExt;
        let Ok(stream) = self
            .logs(at, service, Some(revision), FAILURE_LINES, false)
            .await
        else {
            return Vec::new();
        };
        stream
            .filter_map(|line| async move { line.ok() })
            .collect()
            .await
    }

    /// Asks the supervisor of a placement that must already run, and reads its answer as a `T`.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        at: &Placement,
        request: &Request,
    ) -> Result<T> {
        let value = self
            .call(
                &self.address(&at.sandcastle, Some(&at.region)),
                request,
                false,
            )
            .await?;
        serde_json::from_value(value)
            .map_err(|e| Error::Failed(format!("the supervisor's answer: {e}")))
    }

    async fn front_door_call(
        &self,
        sandcastle: &str,
        request: &Request,
        start: bool,
    ) -> Result<serde_json::Value> {
        self.call(&self.address(sandcastle, None), request, start)
            .await
    }
}

#[async_trait]
impl Platform for LocalPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Local
    }

    fn capabilities(&self) -> PlatformCapabilities {
        PlatformCapabilities {
            traffic_split: true,
            tags: true,
            regions: true,
            exec: false,
            logs: true,
            native_secrets: false,
            native_health: false,
            metrics: true,
            front_door: true,
        }
    }

    fn cannot_run(&self, spec: &RevisionSpec) -> Option<String> {
        if spec.run.is_some() || spec.image.is_none() {
            return None;
        }
        crate::copies::container_engine_ready().err().map(|why| {
            format!(
                "`{}` has only an image, and {why}; or give the service `run = \"COMMAND\"` to run it \
                 as a process",
                spec.service
            )
        })
    }

    async fn observe(&self, at: &Placement) -> Result<Observed> {
        Ok(self
            .snapshot(at)
            .await?
            .map(|snapshot| snapshot.observed)
            .unwrap_or_default())
    }

    async fn deploy(
        &self,
        at: &Placement,
        name: &str,
        spec: &RevisionSpec,
        secrets: &SecretValues,
    ) -> Result<Option<String>> {
        let request = Request::Deploy {
            name: name.to_string(),
            spec: Box::new(spec.clone()),
            secrets: secrets.expose().clone(),
        };
        let value = self
            .call(
                &self.address(&at.sandcastle, Some(&at.region)),
                &request,
                true,
            )
            .await?;
        Ok(value
            .get("url")
            .and_then(|url| url.as_str())
            .map(str::to_string))
    }

    async fn wait_ready(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        deadline: Duration,
        progress: Progress<'_>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut last_said = String::new();
        loop {
            let observed = self.observe(at).await?;
            let found = observed
                .services
                .get(service)
                .and_then(|found| found.revision(revision))
                .ok_or_else(|| Error::Failed(format!("`{revision}` of `{service}` is gone")))?;
            let up = found.copies.iter().filter(|copy| copy.healthy).count();
            let said = format!(
                "{revision}: {} ({up} of {} copies up)",
                found.health.label(),
                found.copies.len()
            );
            if said != last_said {
                progress(said.clone());
                last_said = said;
            }
            let failure = match &found.health {
                Health::Healthy | Health::Succeeded => return Ok(()),
                Health::Failed(reason) | Health::Unhealthy(reason) => Some(reason.clone()),
                Health::Starting | Health::Degraded(_) => None,
            };
            let timed_out = started.elapsed() >= deadline;
            if failure.is_some() || timed_out {
                let reason = failure.unwrap_or_else(|| {
                    let check = found.spec.health.as_ref().map_or_else(
                        || "no health check answered".to_string(),
                        |health| format!("GET {} never answered 2xx or 3xx", health.path),
                    );
                    format!("not healthy after {} s ({check})", deadline.as_secs())
                });
                let lines = self.last_lines(at, service, revision).await;
                let tail = if lines.is_empty() {
                    "it wrote nothing to its log".to_string()
                } else {
                    format!("its last log lines:\n  {}", lines.join("\n  "))
                };
                return Err(Error::Failed(format!(
                    "{revision} in {}: {reason}; {tail}",
                    at.region
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn set_traffic(
        &self,
        at: &Placement,
        service: &str,
        weights: &[(String, u8)],
    ) -> Result<()> {
        let request = Request::SetTraffic {
            service: service.to_string(),
            weights: weights.to_vec(),
        };
        self.call(
            &self.address(&at.sandcastle, Some(&at.region)),
            &request,
            true,
        )
        .await
        .map(drop)
    }

    async fn set_tag(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        tag: Option<&str>,
    ) -> Result<Option<String>> {
        let request = Request::SetTag {
            service: service.to_string(),
            revision: revision.to_string(),
            tag: tag.map(str::to_string),
        };
        self.ask(at, &request).await
    }

    async fn destroy(&self, at: &Placement, service: &str, revision: Option<&str>) -> Result<()> {
        let request = Request::Destroy {
            service: service.to_string(),
            revision: revision.map(str::to_string),
        };
        self.ask::<serde_json::Value>(at, &request).await.map(drop)
    }

    async fn logs(
        &self,
        at: &Placement,
        service: &str,
        revision: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<String>>> {
        let address = self.address(&at.sandcastle, Some(&at.region));
        let stream = UnixStream::connect(&address.socket)
            .await
            .map_err(|_| Error::Failed(format!("nothing runs in {at}; deploy it first")))?;
        let request = Request::Logs {
            service: service.to_string(),
            revision: revision.map(str::to_string),
            tail,
            follow,
        };
        let (first, reader, write) = exchange(stream, &request).await?;
        if let Ok(Reply::Error(message)) = serde_json::from_str::<Reply>(&first) {
            return Err(Error::Failed(message));
        }
        let lines = futures::stream::unfold((reader, write), |(mut reader, write)| async move {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => None,
                Ok(_) => {
                    let text = serde_json::from_str::<String>(&line).unwrap_or(line);
                    Some((Ok(text), (reader, write)))
                }
            }
        });
        Ok(Box::pin(lines))
    }

    async fn set_front_door(
        &self,
        sandcastle: &str,
        service: &str,
        port: u16,
        regions: &[(String, String)],
        health_path: &str,
    ) -> Result<String> {
        let request = Request::SetFrontDoor {
            service: service.to_string(),
            port,
            regions: regions.to_vec(),
            health_path: health_path.to_string(),
        };
        let value = self.front_door_call(sandcastle, &request, true).await?;
        serde_json::from_value(value).map_err(|e| Error::Failed(e.to_string()))
    }

    async fn front_door(&self, sandcastle: &str) -> Result<Option<FrontDoorStatus>> {
        let start = self.address(sandcastle, None).state().exists();
        match self
            .front_door_call(sandcastle, &Request::FrontDoor, start)
            .await
        {
            Ok(value) => serde_json::from_value(value).map_err(|e| Error::Failed(e.to_string())),
            Err(_) if !start => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn expect_probe(
        &self,
        at: &Placement,
        service: &str,
        path: &str,
        nonce: &str,
    ) -> Result<()> {
        let request = Request::ExpectProbe {
            service: service.to_string(),
            path: path.to_string(),
            nonce: nonce.to_string(),
        };
        self.ask::<serde_json::Value>(at, &request).await.map(drop)
    }

    async fn probe_answer(&self, at: &Placement, nonce: &str) -> Result<Option<u16>> {
        let nonce = nonce.to_string();
        self.ask(at, &Request::ProbeAnswer { nonce }).await
    }

    async fn request_from(&self, at: &Placement, _service: &str, url: &str) -> Result<u16> {
        let url = url.to_string();
        self.ask(at, &Request::Request { url }).await
    }

    async fn metrics_text(&self, at: &Placement) -> Result<String> {
        self.ask(at, &Request::Metrics).await
    }

    async fn destroy_placement(&self, at: &Placement) -> Result<()> {
        let address = self.address(&at.sandcastle, Some(&at.region));
        shut_down(self, &address).await
    }

    async fn recover(&self) -> Result<Vec<Placement>> {
        let mut restarted = Vec::new();
        for at in self.placements() {
            let address = self.address(&at.sandcastle, Some(&at.region));
            if UnixStream::connect(&address.socket).await.is_err() {
                self.snapshot(&at).await?;
                restarted.push(at);
            }
        }
        let sandcastles: std::collections::BTreeSet<String> =
            read_dir_names(&self.state_dir.join("deploy"))
                .into_iter()
                .collect();
        for sandcastle in sandcastles {
            let address = self.address(&sandcastle, None);
            if address.state().exists() && UnixStream::connect(&address.socket).await.is_err() {
                self.front_door(&sandcastle).await?;
                restarted.push(Placement {
                    sandcastle,
                    region: "front door".into(),
                });
            }
        }
        Ok(restarted)
    }

    async fn destroy_front_door(&self, sandcastle: &str) -> Result<()> {
        let address = self.address(sandcastle, None);
        shut_down(self, &address).await
    }
}

async fn shut_down(platform: &LocalPlatform, address: &Address) -> Result<()> {
    if UnixStream::connect(&address.socket).await.is_ok() {
        platform.call(address, &Request::Shutdown, false).await?;
    }
    // Nothing runs any more: the state and logs go too, and an empty sandcastle directory with them.
    // A log line still on its way may land while the directory goes; a second pass takes it.
    for _ in 0..5 {
        if std::fs::remove_dir_all(&address.dir).is_ok() || !address.dir.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(parent) = address.dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// Sends one request line and reads the first line of the answer; the connection stays open for the
/// lines a streamed answer (logs) sends after it.
async fn exchange(
    stream: UnixStream,
    request: &Request,
) -> Result<(String, BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request).map_err(|e| Error::Failed(e.to_string()))?;
    bytes.push(b'\n');
    write
        .write_all(&bytes)
        .await
        .map_err(|e| Error::io("cannot write to the supervisor", e))?;
    let mut reader = BufReader::new(read);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .await
        .map_err(|e| Error::io("cannot read the supervisor's answer", e))?;
    Ok((first, reader, write))
}

fn read_dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

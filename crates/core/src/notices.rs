//! Notices of output for targets that learn of it by following each session's output stream (a pty
//! host's watch connection, a pod's attach stream). One follower per target runs while anyone
//! listens: it looks for sessions to follow every so often, follows each until its stream ends, and
//! sends the session's native id whenever output comes (and once more when the stream ends, since
//! the session's state changed too). See `Target::screen_changes`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

/// What a target offers to be followed.
#[async_trait]
pub trait Followed: Clone + Send + Sync + 'static {
    /// The sessions that have output to follow now (native ids).
    async fn followable(&self) -> Vec<String>;

    /// Follows the output of session `native` until it ends, calling `output` whenever some comes;
    /// stops early when `output` returns false (nobody listens any more).
    async fn follow(&self, native: &str, output: &mut (dyn FnMut() -> bool + Send));
}

/// The notices of one target; cheap to clone, all clones share the follower.
#[derive(Clone, Debug, Default)]
pub struct OutputNotices {
    running: Arc<Mutex<Option<broadcast::Sender<String>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OutputNotices {
    /// Listens to the notices, starting the follower if none runs; `None` outside a Tokio runtime.
    /// The follower looks for new sessions every `look`.
    pub fn subscribe<F: Followed>(
        &self,
        followed: &F,
        look: Duration,
    ) -> Option<broadcast::Receiver<String>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut running = lock(&self.running);
        if let Some(sender) = running.as_ref() {
            return Some(sender.subscribe());
        }
        let (sender, receiver) = broadcast::channel(4096);
        *running = Some(sender.clone());
        runtime.spawn(follow_all(
            Arc::clone(&self.running),
            followed.clone(),
            sender,
            look,
        ));
        Some(receiver)
    }
}

async fn follow_all<F: Followed>(
    running: Arc<Mutex<Option<broadcast::Sender<String>>>>,
    followed: F,
    sender: broadcast::Sender<String>,
    look: Duration,
) {
    let (stop, stopped) = watch::channel(false);
    let following: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        {
            // Decided under the lock, so a listener that comes now starts a new follower.
            let mut running = lock(&running);
            if sender.receiver_count() == 0 {
                *running = None;
                let _ = stop.send(true);
                return;
            }
        }
        for native in followed.followable().await {
            if !lock(&following).insert(native.clone()) {
                continue;
            }
            tokio::spawn(follow_one(
                followed.clone(),
                native,
                sender.clone(),
                Arc::clone(&following),
                stopped.clone(),
            ));
        }
        tokio::time::sleep(look).await;
    }
}

async fn follow_one<F: Followed>(
    followed: F,
    native: String,
    sender: broadcast::Sender<String>,
    following: Arc<Mutex<HashSet<String>>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut output = || sender.send(native.clone()).is_ok();
    tokio::select! {
        _ = followed.follow(&native, &mut output) => {}
        _ = stopped.wait_for(|stop| *stop) => return,
    }
    // The stream ended: the session ended or changed, which is news too.
    let _ = sender.send(native.clone());
    lock(&following).remove(&native);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One session, whose "output" is a notification the test sends.
    type Session = (String, Arc<tokio::sync::Notify>);

    #[derive(Clone)]
    struct Channels {
        sessions: Arc<Mutex<Vec<Session>>>,
    }

    #[async_trait]
    impl Followed for Channels {
        async fn followable(&self) -> Vec<String> {
            lock(&self.sessions)
                .iter()
                .map(|(n, _)| n.clone())
                .collect()
        }

        async fn follow(&self, native: &str, output: &mut (dyn FnMut() -> bool + Send)) {
            let notify = lock(&self.sessions)
                .iter()
                .find(|(n, _)| n == native)
                .map(|(_, notify)| Arc::clone(notify));
            let Some(notify) = notify else { return };
            loop {
                notify.notified().await;
                if !output() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn output_of_a_followed_session_is_noticed_and_the_follower_stops_without_listeners() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let channels = Channels {
            sessions: Arc::new(Mutex::new(vec![("a".into(), Arc::clone(&notify))])),
        };
        let notices = OutputNotices::default();
        let mut changes = notices
            .subscribe(&channels, Duration::from_millis(5))
            .unwrap();
        // Output before the follower found the session is not noticed; keep writing until it is.
        let noticed = loop {
            notify.notify_one();
            match tokio::time::timeout(Duration::from_millis(20), changes.recv()).await {
                Ok(notice) => break notice.unwrap(),
                Err(_) => continue,
            }
        };
        assert_eq!(noticed, "a");
        drop(changes);
        // With nobody listening the follower ends, and a new listener starts a new one.
        while lock(&notices.running).is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            notices
                .subscribe(&channels, Duration::from_millis(5))
                .is_some()
        );
    }
}

//! The `EventBus` trait: topics and push subscriptions between services (Pub/Sub on Google Cloud, the
//! Pub/Sub emulator locally).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A topic as the bus names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRef {
    /// The project the topic lives in (`mahavishnu-local` on the emulator).
    pub project: String,
    /// The topic id inside the project (`shop.local-a.orders`).
    pub id: String,
}

impl TopicRef {
    /// The full resource name, `projects/P/topics/ID`: what publishers receive as `<NAME>_TOPIC`.
    pub fn path(&self) -> String {
        format!("projects/{}/topics/{}", self.project, self.id)
    }
}

/// Checks a topic or subscription id as Pub/Sub takes it: 3 to 255 characters, starting with a
/// letter, of letters, digits and `-_.~+%`, and not starting with `goog`.
pub fn check_topic_id(id: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~+%".contains(c);
    let ok = (3..=255).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(allowed)
        && !id.starts_with("goog");
    if ok {
        Ok(())
    } else {
        Err(crate::error::Error::Invalid(format!(
            "`{id}` is not a Pub/Sub id: use 3 to 255 letters, digits and `-_.~+%`, starting with a \
             letter (and not with `goog`)"
        )))
    }
}

/// A message received from a pull subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The message id the bus gave it.
    pub id: String,
    /// Its data.
    pub data: Vec<u8>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Messages as they come from a pull subscription.
pub type Messages = futures::stream::BoxStream<'static, Result<Received>>;

/// A push subscription: every message on `topic` is POSTed to `endpoint` in the Pub/Sub push envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    /// The subscription id inside the topic's project.
    pub id: String,
    /// The topic it reads.
    pub topic: TopicRef,
    /// Where messages are pushed (`http://127.0.0.1:PORT/events/orders`).
    pub endpoint: String,
    /// After this many failed deliveries a message goes to the dead-letter topic, when there is one.
    pub dead_letter: Option<(TopicRef, u32)>,
    /// How long the subscriber has to answer a push before it is retried.
    pub ack_deadline: Duration,
    /// The service account whose OIDC token each push carries, for subscribers that check callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_identity: Option<String>,
}

/// Topics and subscriptions. Every method is idempotent: ensuring what exists changes it to what is
/// asked, or leaves it alone when it already is.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Where the bus is, in a few words (`Pub/Sub emulator at 127.0.0.1:8085`).
    fn location(&self) -> String;

    /// The environment a service needs to reach the bus with its own client library
    /// (`PUBSUB_EMULATOR_HOST`, `PUBSUB_PROJECT_ID`), empty on the real service.
    fn client_env(&self) -> BTreeMap<String, String>;

    /// Creates the topic unless it exists.
    async fn ensure_topic(&self, topic: &TopicRef) -> Result<()>;

    /// Creates the push subscription, or updates its endpoint and dead-letter policy to these.
    async fn ensure_push_subscription(&self, subscription: &PushSubscription) -> Result<()>;

    /// Publishes one message; returns its message id.
    async fn publish(
        &self,
        topic: &TopicRef,
        data: &[u8],
        attributes: &BTreeMap<String, String>,
    ) -> Result<String>;

    /// Deletes the subscription; deleting one that does not exist is not an error.
    async fn delete_subscription(&self, project: &str, id: &str) -> Result<()>;

    /// Deletes the topic; deleting one that does not exist is not an error.
    async fn delete_topic(&self, topic: &TopicRef) -> Result<()>;

    /// Receives the messages of `topic` through the pull subscription `subscription` of its project,
    /// made (with the topic) unless they exist; each message is acknowledged as it is handed over.
    async fn receive(&self, topic: &TopicRef, subscription: &str) -> Result<Messages>;
}

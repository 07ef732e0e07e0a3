//! [`PubSubBus`]: the [`EventBus`] on the Pub/Sub emulator through the official client.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_pubsub::client::{
    BasePublisher, Publisher, Subscriber, SubscriptionAdmin, TopicAdmin,
};
use google_cloud_pubsub::model::{DeadLetterPolicy, Message, PushConfig, Subscription};
use google_cloud_pubsub::retry_policy::RetryableErrors;
use mahavishnu_core::deploy::events::{EventBus, Messages, PushSubscription, Received, TopicRef};
use mahavishnu_core::{Error, Result};

/// How often and how long one call retries transient failures. The emulator is on this machine and
/// answered before the bus was made, so a refused connection means it is gone, and saying so within
/// seconds beats the client's default of retrying for minutes.
const RETRY_ATTEMPTS: u32 = 3;
const RETRY_LIMIT: Duration = Duration::from_secs(10);

/// Google's Pub/Sub, for messages.
const GOOGLE_PUBSUB: &str = "pubsub.googleapis.com";

/// Pub/Sub bounds these; checking them here names the subscription instead of returning the server's
/// bare `InvalidArgument`.
const ACK_DEADLINE_SECONDS: std::ops::RangeInclusive<u64> = 10..=600;
const DELIVERY_ATTEMPTS: std::ops::RangeInclusive<u32> = 5..=100;

/// What a service needs to reach the emulator at `host` (`127.0.0.1:PORT`) with its own client
/// library, for `project`. A plan that sees a running emulator and an apply that connects to it must
/// wire services alike, or every plan would find them changed.
pub fn emulator_client_env(host: &str, project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("PUBSUB_EMULATOR_HOST".to_string(), host.to_string()),
        ("PUBSUB_PROJECT_ID".to_string(), project.to_string()),
        // Several client libraries read the project from here instead.
        ("GOOGLE_CLOUD_PROJECT".to_string(), project.to_string()),
    ])
}

/// The [`EventBus`] on a Pub/Sub emulator, reached with the official `google-cloud-pubsub` client.
pub struct PubSubBus {
    /// `host:port`, what other clients take as `PUBSUB_EMULATOR_HOST`; Google's host otherwise.
    host: String,
    /// Whether it is the emulator (services then need `PUBSUB_EMULATOR_HOST`).
    emulator: bool,
    project: String,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
    base_publisher: BasePublisher,
    /// One publisher per topic path: each runs a batching task of its own, so they are kept rather
    /// than made for every message.
    publishers: Mutex<HashMap<String, Publisher>>,
}

impl std::fmt::Debug for PubSubBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubBus")
            .field("host", &self.host)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl PubSubBus {
    /// Connects to the Pub/Sub emulator at `endpoint` (`http://127.0.0.1:8085`); `project` is the one
    /// services are told to use. Nothing is sent yet: a dead emulator shows on the first call.
    pub async fn connect(endpoint: &str, project: &str) -> Result<PubSubBus> {
        let host = emulator_host(endpoint)?;
        Self::connect_to(Some(host), project).await
    }

    /// Connects to Google's Pub/Sub in `project` with Application Default Credentials.
    pub async fn connect_google(project: &str) -> Result<PubSubBus> {
        Self::connect_to(None, project).await
    }

    /// The emulator at `host`, or Google's Pub/Sub when `None`.
    async fn connect_to(emulator: Option<String>, project: &str) -> Result<PubSubBus> {
        if project.trim().is_empty() {
            return Err(Error::Invalid(
                "the Pub/Sub project is empty; give the project the topics live in".into(),
            ));
        }
        // The HTTP client inside refuses to be built without a process-wide crypto provider, even for
        // plain http. Losing a race to install one is fine: one is then installed.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let where_ = emulator
            .clone()
            .unwrap_or_else(|| GOOGLE_PUBSUB.to_string());
        // The official client ignores PUBSUB_EMULATOR_HOST, so the emulator is reached by naming its
        // endpoint and presenting no credentials, which it does not check.
        macro_rules! build {
            ($builder:expr, $policy:expr, $what:literal) => {{
                let mut builder = $builder.with_retry_policy(
                    $policy
                        .with_attempt_limit(RETRY_ATTEMPTS)
                        .with_time_limit(RETRY_LIMIT),
                );
                if let Some(host) = &emulator {
                    builder = builder
                        .with_endpoint(format!("http://{host}"))
                        .with_credentials(Anonymous::new().build());
                }
                builder
                    .build()
                    .await
                    .map_err(|e| client_failed($what, &where_, e))?
            }};
        }
        let topics = build!(TopicAdmin::builder(), Aip194Strict, "topic admin");
        let subscriptions = build!(
            SubscriptionAdmin::builder(),
            Aip194Strict,
            "subscription admin"
        );
        let base_publisher = build!(BasePublisher::builder(), RetryableErrors, "publisher");
        Ok(PubSubBus {
            host: where_,
            emulator: emulator.is_some(),
            project: project.to_string(),
            topics,
            subscriptions,
            base_publisher,
            publishers: Mutex::new(HashMap::new()),
        })
    }

    fn publisher(&self, topic: &str) -> Publisher {
        let mut publishers = self
            .publishers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        publishers
            .entry(topic.to_string())
            .or_insert_with(|| self.base_publisher.publisher(topic).build())
            .clone()
    }

    fn forget_publisher(&self, topic: &str) {
        self.publishers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(topic);
    }

    /// The error for a call that failed, with the fix that fits how it failed.
    fn failed(&self, what: &str, error: google_cloud_gax::error::Error) -> Error {
        if !self.emulator {
            return Error::Failed(format!(
                "{what} on Pub/Sub in project {}: {error}",
                self.project
            ));
        }
        if error.is_connect() || error.is_io() || error.is_timeout() || error.is_exhausted() {
            Error::Failed(format!(
                "{what}: the Pub/Sub emulator at {} does not answer ({error}); start it again (it is \
                 started on demand when PUBSUB_EMULATOR_HOST is unset) or point PUBSUB_EMULATOR_HOST \
                 at one that runs",
                self.host
            ))
        } else {
            Error::Failed(format!(
                "{what} on the Pub/Sub emulator at {}: {error}",
                self.host
            ))
        }
    }

    async fn create_subscription(&self, wanted: &Subscription) -> Result<Option<Subscription>> {
        let created = self
            .subscriptions
            .create_subscription()
            .set_name(&wanted.name)
            .set_topic(&wanted.topic)
            .set_or_clear_push_config(wanted.push_config.clone())
            .set_ack_deadline_seconds(wanted.ack_deadline_seconds)
            .set_or_clear_dead_letter_policy(wanted.dead_letter_policy.clone())
            .send()
            .await;
        match created {
            Ok(_) => Ok(None),
            // Another deploy created it between our get and create: compare with what it made.
            Err(e) if code(&e) == Some(Code::AlreadyExists) => {
                let existing = self
                    .subscriptions
                    .get_subscription()
                    .set_subscription(&wanted.name)
                    .send()
                    .await
                    .map_err(|e| {
                        self.failed(&format!("reading subscription `{}`", wanted.name), e)
                    })?;
                Ok(Some(existing))
            }
            Err(e) if code(&e) == Some(Code::NotFound) => Err(Error::Failed(format!(
                "creating subscription `{}`: its topic `{}` or its dead-letter topic does not exist on \
                 the Pub/Sub emulator at {}; ensure the topics before their subscriptions",
                wanted.name, wanted.topic, self.host
            ))),
            Err(e) => Err(self.failed(&format!("creating subscription `{}`", wanted.name), e)),
        }
    }

    async fn update_subscription(
        &self,
        existing: &Subscription,
        wanted: &Subscription,
    ) -> Result<()> {
        if existing.topic != wanted.topic {
            // A subscription cannot move to another topic; replacing it would drop its backlog, which
            // is the user's call, not ours.
            return Err(Error::Invalid(format!(
                "subscription `{}` reads topic `{}`, not `{}`; a subscription cannot change its topic: \
                 delete it so that it is created again on the new topic, or give the new one another id",
                wanted.name, existing.topic, wanted.topic
            )));
        }
        let mut paths = Vec::new();
        if endpoint_of(existing) != endpoint_of(wanted)
            || identity_of(existing) != identity_of(wanted)
        {
            paths.push("push_config");
        }
        if existing.ack_deadline_seconds != wanted.ack_deadline_seconds {
            paths.push("ack_deadline_seconds");
        }
        if dead_letter_of(existing) != dead_letter_of(wanted) {
            paths.push("dead_letter_policy");
        }
        if paths.is_empty() {
            return Ok(());
        }
        self.subscriptions
            .update_subscription()
            .set_subscription(wanted.clone())
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(paths.clone()))
            .send()
            .await
            .map_err(|e| {
                self.failed(
                    &format!(
                        "updating {} of subscription `{}`",
                        paths.join(", "),
                        wanted.name
                    ),
                    e,
                )
            })?;
        Ok(())
    }
}

#[async_trait]
impl EventBus for PubSubBus {
    fn location(&self) -> String {
        if self.emulator {
            format!(
                "Pub/Sub emulator at {} (project {})",
                self.host, self.project
            )
        } else {
            format!("Pub/Sub in project {}", self.project)
        }
    }

    fn client_env(&self) -> BTreeMap<String, String> {
        if self.emulator {
            emulator_client_env(&self.host, &self.project)
        } else {
            BTreeMap::new()
        }
    }

    async fn ensure_topic(&self, topic: &TopicRef) -> Result<()> {
        check_topic(topic)?;
        let name = topic.path();
        match self.topics.get_topic().set_topic(&name).send().await {
            Ok(_) => return Ok(()),
            Err(e) if code(&e) == Some(Code::NotFound) => {}
            Err(e) => return Err(self.failed(&format!("reading topic `{name}`"), e)),
        }
        match self.topics.create_topic().set_name(&name).send().await {
            Ok(_) => Ok(()),
            // Created by someone else since we looked: that is what was asked.
            Err(e) if code(&e) == Some(Code::AlreadyExists) => Ok(()),
            Err(e) => Err(self.failed(&format!("creating topic `{name}`"), e)),
        }
    }

    async fn ensure_push_subscription(&self, subscription: &PushSubscription) -> Result<()> {
        let wanted = wanted_subscription(subscription)?;
        let existing = match self
            .subscriptions
            .get_subscription()
            .set_subscription(&wanted.name)
            .send()
            .await
        {
            Ok(existing) => existing,
            Err(e) if code(&e) == Some(Code::NotFound) => {
                match self.create_subscription(&wanted).await? {
                    None => return Ok(()),
                    Some(existing) => existing,
                }
            }
            Err(e) => {
                return Err(self.failed(&format!("reading subscription `{}`", wanted.name), e));
            }
        };
        self.update_subscription(&existing, &wanted).await
    }

    async fn publish(
        &self,
        topic: &TopicRef,
        data: &[u8],
        attributes: &BTreeMap<String, String>,
    ) -> Result<String> {
        check_topic(topic)?;
        let name = topic.path();
        let message = Message::new()
            .set_data(data.to_vec())
            .set_attributes(attributes.clone());
        self.publisher(&name).publish(message).await.map_err(|e| {
            Error::Failed(format!(
                "publishing to topic `{name}` on {}: {e}; check that the topic exists (it is made \
                 when its app is deployed) and that the bus runs",
                self.location()
            ))
        })
    }

    async fn delete_subscription(&self, project: &str, id: &str) -> Result<()> {
        let name = format!("projects/{project}/subscriptions/{id}");
        match self
            .subscriptions
            .delete_subscription()
            .set_subscription(&name)
            .send()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(self.failed(&format!("deleting subscription `{name}`"), e)),
        }
    }

    async fn receive(&self, topic: &TopicRef, subscription: &str) -> Result<Messages> {
        use futures::StreamExt;
        check_topic(topic)?;
        mahavishnu_core::deploy::events::check_topic_id(subscription)?;
        self.ensure_topic(topic).await?;
        let name = format!("projects/{}/subscriptions/{subscription}", topic.project);
        let wanted = Subscription::new()
            .set_name(&name)
            .set_topic(topic.path())
            .set_ack_deadline_seconds(60);
        if let Some(existing) = self.create_subscription(&wanted).await?
            && existing.topic != wanted.topic
        {
            return Err(Error::Invalid(format!(
                "subscription `{name}` reads topic `{}`, not `{}`; delete it, or give this one \
                 another name",
                existing.topic, wanted.topic
            )));
        }
        let mut builder = Subscriber::builder();
        if self.emulator {
            builder = builder
                .with_endpoint(format!("http://{}", self.host))
                .with_credentials(Anonymous::new().build());
        }
        let subscriber = builder
            .build()
            .await
            .map_err(|e| client_failed("subscriber", &self.host, e))?;
        let location = self.location();
        let stream = subscriber.subscribe(name.clone()).build();
        // The client goes along with the stream: its connection serves it.
        let state = (stream, subscriber, name, location);
        let messages = futures::stream::unfold(
            state,
            |(mut stream, subscriber, name, location)| async move {
                let received = match stream.next().await? {
                    Ok((message, handler)) => {
                        handler.ack();
                        Ok(Received {
                            id: message.message_id,
                            data: message.data.to_vec(),
                            attributes: message.attributes.into_iter().collect(),
                        })
                    }
                    Err(e) => Err(Error::Failed(format!(
                        "receiving from subscription `{name}` on {location}: {e}"
                    ))),
                };
                Some((received, (stream, subscriber, name, location)))
            },
        );
        Ok(messages.boxed())
    }

    async fn delete_topic(&self, topic: &TopicRef) -> Result<()> {
        let name = topic.path();
        // Kept, a deleted topic's publisher would only hold a batching task for nothing.
        self.forget_publisher(&name);
        match self.topics.delete_topic().set_topic(&name).send().await {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(self.failed(&format!("deleting topic `{name}`"), e)),
        }
    }
}

/// `host:port` out of the emulator's endpoint, refusing what the emulator cannot be.
fn emulator_host(endpoint: &str) -> Result<String> {
    let invalid = |why: &str| {
        Error::Invalid(format!(
            "`{endpoint}` is not a Pub/Sub emulator endpoint: {why}; give it as http://HOST:PORT \
             (http://127.0.0.1:8085, say)"
        ))
    };
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| invalid("the emulator speaks plain http"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains('/') {
        return Err(invalid("it must be a host and port, without a path"));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(host.to_string())
        }
        _ => Err(invalid("the port is missing")),
    }
}

fn check_topic(topic: &TopicRef) -> Result<()> {
    if topic.project.is_empty() || topic.id.is_empty() {
        return Err(Error::Invalid(format!(
            "topic `{}` has an empty project or id; name it as project and id (mahavishnu-local, \
             shop.orders)",
            topic.path()
        )));
    }
    Ok(())
}

/// The subscription as Pub/Sub should hold it, after the checks the server would make less clearly.
fn wanted_subscription(subscription: &PushSubscription) -> Result<Subscription> {
    check_topic(&subscription.topic)?;
    let name = format!(
        "projects/{}/subscriptions/{}",
        subscription.topic.project, subscription.id
    );
    if subscription.id.is_empty() {
        return Err(Error::Invalid(format!(
            "a push subscription on topic `{}` has an empty id; give it one",
            subscription.topic.path()
        )));
    }
    if !(subscription.endpoint.starts_with("http://")
        || subscription.endpoint.starts_with("https://"))
    {
        return Err(Error::Invalid(format!(
            "subscription `{name}` pushes to `{}`, which is not an http:// or https:// URL; give the \
             full URL of the receiving route",
            subscription.endpoint
        )));
    }
    let ack = subscription.ack_deadline.as_secs();
    if !ACK_DEADLINE_SECONDS.contains(&ack) {
        return Err(Error::Invalid(format!(
            "subscription `{name}` has an ack deadline of {ack}s; Pub/Sub accepts {} to {} seconds",
            ACK_DEADLINE_SECONDS.start(),
            ACK_DEADLINE_SECONDS.end()
        )));
    }
    let mut wanted = Subscription::new()
        .set_name(&name)
        .set_topic(subscription.topic.path())
        .set_push_config(push_config(subscription))
        // In range by the check above.
        .set_ack_deadline_seconds(ack as i32);
    if let Some((topic, attempts)) = &subscription.dead_letter {
        check_topic(topic)?;
        if !DELIVERY_ATTEMPTS.contains(attempts) {
            return Err(Error::Invalid(format!(
                "subscription `{name}` gives up after {attempts} deliveries; Pub/Sub accepts {} to {} \
                 before a message goes to the dead-letter topic",
                DELIVERY_ATTEMPTS.start(),
                DELIVERY_ATTEMPTS.end()
            )));
        }
        wanted = wanted.set_dead_letter_policy(
            DeadLetterPolicy::new()
                .set_dead_letter_topic(topic.path())
                // In range by the check above.
                .set_max_delivery_attempts(*attempts as i32),
        );
    }
    Ok(wanted)
}

/// Where pushes go and, when the subscriber checks callers, the identity whose OIDC token they carry.
fn push_config(subscription: &PushSubscription) -> PushConfig {
    let config = PushConfig::new().set_push_endpoint(&subscription.endpoint);
    match &subscription.push_identity {
        Some(email) => config.set_oidc_token(
            google_cloud_pubsub::model::push_config::OidcToken::new()
                .set_service_account_email(email)
                .set_audience(&subscription.endpoint),
        ),
        None => config,
    }
}

fn identity_of(subscription: &Subscription) -> Option<&str> {
    subscription
        .push_config
        .as_ref()
        .and_then(|push| push.oidc_token())
        .map(|token| token.service_account_email.as_str())
}

fn endpoint_of(subscription: &Subscription) -> &str {
    subscription
        .push_config
        .as_ref()
        .map_or("", |push| push.push_endpoint.as_str())
}

fn dead_letter_of(subscription: &Subscription) -> Option<(&str, i32)> {
    subscription
        .dead_letter_policy
        .as_ref()
        .filter(|policy| !policy.dead_letter_topic.is_empty())
        .map(|policy| {
            (
                policy.dead_letter_topic.as_str(),
                policy.max_delivery_attempts,
            )
        })
}

fn code(error: &google_cloud_gax::error::Error) -> Option<Code> {
    error.status().map(|status| status.code)
}

fn client_failed(which: &str, host: &str, error: impl std::fmt::Display) -> Error {
    Error::Failed(format!(
        "could not set up the Pub/Sub {which} client for the emulator at {host}: {error}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_endpoints_are_checked() {
        assert_eq!(
            emulator_host("http://127.0.0.1:8085").unwrap(),
            "127.0.0.1:8085"
        );
        assert_eq!(emulator_host("http://localhost:9/").unwrap(), "localhost:9");
        for bad in [
            "127.0.0.1:8085",
            "https://pubsub.googleapis.com",
            "http://127.0.0.1",
            "http://127.0.0.1:8085/v1",
            "http://:8085",
        ] {
            let err = emulator_host(bad).unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("http://HOST:PORT"),
                "{err}"
            );
        }
    }

    fn subscription() -> PushSubscription {
        PushSubscription {
            push_identity: None,
            id: "orders-to-billing".into(),
            topic: TopicRef {
                project: "p".into(),
                id: "orders".into(),
            },
            endpoint: "http://127.0.0.1:9/events".into(),
            dead_letter: None,
            ack_deadline: Duration::from_secs(10),
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_with_their_bounds() {
        let mut s = subscription();
        s.ack_deadline = Duration::from_secs(3);
        let err = wanted_subscription(&s).unwrap_err().to_string();
        assert!(err.contains("3s") && err.contains("10 to 600"), "{err}");

        let mut s = subscription();
        s.dead_letter = Some((s.topic.clone(), 2));
        let err = wanted_subscription(&s).unwrap_err().to_string();
        assert!(err.contains("5 to 100"), "{err}");

        let mut s = subscription();
        s.endpoint = "127.0.0.1:9/events".into();
        let err = wanted_subscription(&s).unwrap_err().to_string();
        assert!(err.contains("not an http://"), "{err}");
    }

    #[test]
    fn the_wanted_subscription_lives_in_its_topics_project() {
        let mut s = subscription();
        s.dead_letter = Some((
            TopicRef {
                project: "p".into(),
                id: "dead".into(),
            },
            5,
        ));
        let wanted = wanted_subscription(&s).unwrap();
        assert_eq!(wanted.name, "projects/p/subscriptions/orders-to-billing");
        assert_eq!(wanted.topic, "projects/p/topics/orders");
        assert_eq!(endpoint_of(&wanted), "http://127.0.0.1:9/events");
        assert_eq!(dead_letter_of(&wanted), Some(("projects/p/topics/dead", 5)));
        assert_eq!(wanted.ack_deadline_seconds, 10);
    }
}

//! The messaging capability: `wasi:messaging@0.2.0-draft` for guests, on a broker the host
//! chooses.
//!
//! In the manner of `wasmtime-wasi`'s interface families:
//! - [`MessagingPolicy`]: the subjects a function may publish to (data, part of its
//!   [`Policy`](crate::Policy));
//! - [`MessagingCtx`]: one instance's state, built from the policy and the runtime's
//!   [`MessagingBackend`];
//! - [`add_to_linker`]: links `types` and `producer` (the `imports` world). A component that
//!   exports `incoming-handler` (the `messaging-core` world) is a message function: the host
//!   hands it each message with [`Function::handle_message`](crate::Function::handle_message).
//!
//! Every failure reaches the guest as the interface's `error`: `permission-denied` for a topic
//! outside the policy, `connection` when the host has no broker. Only a guest's misuse of its
//! own handles traps.

pub mod subject;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use subject::Pattern;

wasmtime::component::bindgen!({
    path: "wit/messaging-0.2.0-draft",
    world: "wasi:messaging/messaging-core",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:messaging/types.client": Client,
        "wasi:messaging/types.message": Message,
    },
});

pub(crate) use self::MessagingCorePre as MessagePre;
use self::wasi::messaging::{producer, types};

/// A message, as the host holds it for a guest: what it received or is about to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The subject it came on (`None` for one the guest made).
    pub topic: Option<String>,
    /// Its content type, if it has one.
    pub content_type: Option<String>,
    /// Its payload.
    pub data: Vec<u8>,
    /// Its metadata (headers).
    pub metadata: Vec<(String, String)>,
}

/// A connection to the broker (the interface's `client` resource). The host has one broker;
/// the name a guest connects with is kept, not used.
pub struct Client {
    #[allow(dead_code)]
    name: String,
}

/// What a publish returns: done, or why not.
pub type PublishFuture =
    std::pin::Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>>;

/// Where guests' messages go: the cluster's NATS on a node that joined one.
pub trait MessagingBackend: Send + Sync {
    /// Publishes `message` to `subject`; the error says why it could not.
    fn publish(&self, subject: String, message: Message) -> PublishFuture;
}

/// The backend of a host without a broker: every publish fails, saying so.
pub struct NoBroker;

impl MessagingBackend for NoBroker {
    fn publish(&self, _subject: String, _message: Message) -> PublishFuture {
        Box::pin(async { Err("this node has no message broker (it runs alone)".into()) })
    }
}

/// The subjects a function may publish to. The default allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagingPolicy {
    /// Patterns a published subject must lie inside.
    pub publish: Vec<Pattern>,
}

impl MessagingPolicy {
    /// Whether a guest may publish to `subject`.
    pub fn allows(&self, subject: &Pattern) -> bool {
        !subject.is_wildcard() && self.publish.iter().any(|p| p.covers(subject))
    }
}

/// One instance's messaging state.
pub struct MessagingCtx {
    backend: Arc<dyn MessagingBackend>,
    policy: MessagingPolicy,
}

impl MessagingCtx {
    /// The state of an instance of a function with `policy`, on `backend`.
    pub fn new(backend: Arc<dyn MessagingBackend>, policy: &MessagingPolicy) -> Self {
        Self {
            backend,
            policy: policy.clone(),
        }
    }
}

/// What the host functions work on: the instance's messaging state and its resource table.
pub struct MessagingCtxView<'a> {
    /// The instance's state.
    pub ctx: &'a MessagingCtx,
    /// The instance's resources (shared with WASI's).
    pub table: &'a mut ResourceTable,
}

/// A store's data that provides the messaging capability.
pub trait MessagingView: Send {
    /// The view of this instance's messaging state.
    fn messaging(&mut self) -> MessagingCtxView<'_>;
}

struct HasMessaging;

impl HasData for HasMessaging {
    type Data<'a> = MessagingCtxView<'a>;
}

/// Links `wasi:messaging@0.2.0-draft`'s `types` and `producer` into `linker`.
pub fn add_to_linker<T: MessagingView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    types::add_to_linker::<T, HasMessaging>(linker, T::messaging)?;
    producer::add_to_linker::<T, HasMessaging>(linker, T::messaging)
}

type Result<T> = wasmtime::Result<std::result::Result<T, types::Error>>;

impl types::Host for MessagingCtxView<'_> {}

impl types::HostClient for MessagingCtxView<'_> {
    async fn connect(&mut self, name: String) -> Result<Resource<Client>> {
        Ok(Ok(self.table.push(Client { name })?))
    }

    async fn disconnect(&mut self, _client: Resource<Client>) -> Result<()> {
        Ok(Ok(()))
    }

    async fn drop(&mut self, client: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(client)?;
        Ok(())
    }
}

impl types::HostMessage for MessagingCtxView<'_> {
    async fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<Message>> {
        Ok(self.table.push(Message {
            data,
            ..Message::default()
        })?)
    }

    async fn topic(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.topic.clone())
    }

    async fn content_type(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.content_type.clone())
    }

    async fn set_content_type(
        &mut self,
        m: Resource<Message>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.content_type = Some(content_type);
        Ok(())
    }

    async fn data(&mut self, m: Resource<Message>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&m)?.data.clone())
    }

    async fn set_data(&mut self, m: Resource<Message>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.data = data;
        Ok(())
    }

    async fn metadata(
        &mut self,
        m: Resource<Message>,
    ) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        let metadata = &self.table.get(&m)?.metadata;
        Ok((!metadata.is_empty()).then(|| metadata.clone()))
    }

    async fn add_metadata(
        &mut self,
        m: Resource<Message>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        let metadata = &mut self.table.get_mut(&m)?.metadata;
        metadata.retain(|(k, _)| *k != key);
        metadata.push((key, value));
        Ok(())
    }

    async fn set_metadata(
        &mut self,
        m: Resource<Message>,
        meta: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.metadata = meta;
        Ok(())
    }

    async fn remove_metadata(&mut self, m: Resource<Message>, key: String) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.metadata.retain(|(k, _)| *k != key);
        Ok(())
    }

    async fn drop(&mut self, m: Resource<Message>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

impl producer::Host for MessagingCtxView<'_> {
    async fn send(
        &mut self,
        _client: Resource<Client>,
        topic: String,
        message: Resource<Message>,
    ) -> Result<()> {
        // The guest's handle goes with the send, as the interface's ownership says.
        let message = self.table.delete(message)?;
        let subject = match Pattern::parse(&topic) {
            Ok(s) => s,
            Err(e) => return Ok(Err(types::Error::Other(e))),
        };
        if !self.ctx.policy.allows(&subject) {
            return Ok(Err(types::Error::PermissionDenied(format!(
                "{topic} is not among the subjects this function may publish to ({})",
                if self.ctx.policy.publish.is_empty() {
                    "none".to_owned()
                } else {
                    self.ctx
                        .policy
                        .publish
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))));
        }
        Ok(self
            .ctx
            .backend
            .publish(topic, message)
            .await
            .map_err(types::Error::Connection))
    }
}

/// What a message function's `handle` answered when it failed.
pub(crate) fn describe(e: &types::Error) -> String {
    match e {
        types::Error::Timeout => "timeout".into(),
        types::Error::Connection(s) => format!("connection: {s}"),
        types::Error::PermissionDenied(s) => format!("permission denied: {s}"),
        types::Error::Other(s) => s.clone(),
    }
}

//! `wasi:messaging` as a guest sees it: a message function gets each message whole, publishes
//! only to the subjects its policy allows, and its error is the invocation's.

use std::sync::{Arc, Mutex};

use limes_runtime::messaging::{
    Message, MessagingBackend, MessagingPolicy, PublishFuture, subject::Pattern,
};
use limes_runtime::{Error, FunctionKind, Policy, Runtime, RuntimeConfig};

use crate::common::guest;

/// A broker that keeps what is published.
#[derive(Default)]
struct Kept(Mutex<Vec<(String, Message)>>);

impl MessagingBackend for Kept {
    fn publish(&self, subject: String, message: Message) -> PublishFuture {
        self.0.lock().unwrap().push((subject, message));
        Box::pin(async { Ok(()) })
    }
}

fn incoming(topic: &str, data: &str) -> Message {
    Message {
        topic: Some(topic.into()),
        content_type: Some("text/plain".into()),
        data: data.as_bytes().to_vec(),
        metadata: vec![("sensor".into(), "gauge-3".into())],
    }
}

#[tokio::test]
async fn a_message_function_gets_the_message_and_publishes_inside_its_subjects() {
    let kept = Arc::new(Kept::default());
    let runtime = Runtime::with_backends(
        RuntimeConfig::default(),
        Arc::new(limes_runtime::kv::MemoryKv::default()),
        kept.clone(),
    )
    .unwrap();
    let policy = Policy {
        messaging: MessagingPolicy {
            publish: vec![Pattern::parse("alerts.>").unwrap()],
        },
        ..Policy::default()
    };
    let relay = runtime.load_file(guest("relay"), policy).unwrap();
    assert_eq!(relay.kind(), FunctionKind::Message);

    relay
        .handle_message(incoming("sensors.ward-3.level", "high water"))
        .await
        .unwrap();
    let published = kept.0.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    let (subject, message) = &published[0];
    assert_eq!(subject, "alerts.level");
    assert_eq!(message.data, b"HIGH WATER");
    assert_eq!(message.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        message.metadata,
        [("from".to_owned(), "sensors.ward-3.level".to_owned())]
    );

    // Outside its subjects: refused, and the guest's error is the invocation's.
    let refused = relay
        .handle_message(incoming("sensors.x", "leak it"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Trap { message } if message.contains("permission denied") && message.contains("secrets.out")),
        "{refused}"
    );
    let failed = relay
        .handle_message(incoming("sensors.x", "fail"))
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("asked to fail"), "{failed}");
    assert_eq!(
        kept.0.lock().unwrap().len(),
        1,
        "nothing more was published"
    );
    // A run function is not a message function.
    let echo = runtime.load_file(guest("echo"), Policy::default()).unwrap();
    assert!(matches!(
        echo.handle_message(incoming("a", "b")).await,
        Err(Error::WrongKind { .. })
    ));
}

#[tokio::test]
async fn a_host_without_a_broker_says_so() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let policy = Policy {
        messaging: MessagingPolicy {
            publish: vec![Pattern::parse("alerts.>").unwrap()],
        },
        ..Policy::default()
    };
    let relay = runtime.load_file(guest("relay"), policy).unwrap();
    let error = relay
        .handle_message(incoming("sensors.x", "hello"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no message broker"), "{error}");
}

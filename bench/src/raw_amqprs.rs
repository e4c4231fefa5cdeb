//! The raw round trip of [`crate::raw`] again, with another AMQP client: amqprs reads and writes
//! its connection in tasks on the caller's runtime, where lapin hands every frame to and from an
//! I/O thread of its own. The same queue type, message, persistence, publishers and confirms in
//! flight, consumer prefetch and acks one by one: what the client's side of a message costs with
//! fewer hand-offs between threads (issue 32's lead for the processor and the gateway).

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use amqprs::{
    Ack, BasicProperties, Cancel, CloseChannel, FieldTable, FieldValue, Nack, Return,
    callbacks::ChannelCallback,
    channel::{
        BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
        Channel, ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments,
    },
    connection::{Connection, OpenConnectionArguments},
};
use anyhow::Context;

use crate::raw::{IN_FLIGHT, Measured, PUBLISHERS, Test};

/// A publisher channel's confirms: the delivery tags not yet confirmed, and a slot per confirm
/// it may keep in flight.
struct Confirms {
    unconfirmed: Mutex<BTreeSet<u64>>,
    slots: tokio::sync::Semaphore,
    confirmed: AtomicU64,
    refused: AtomicU64,
}

impl Confirms {
    /// Settles `tag` (and every earlier tag, if `multiple`): frees their slots, and counts them.
    fn settle(&self, tag: u64, multiple: bool, count: &AtomicU64) {
        let settled = {
            let mut unconfirmed = self.unconfirmed.lock().expect("not poisoned");
            if multiple {
                let later = unconfirmed.split_off(&(tag + 1));
                std::mem::replace(&mut *unconfirmed, later).len()
            } else {
                usize::from(unconfirmed.remove(&tag))
            }
        };
        count.fetch_add(settled as u64, Ordering::Relaxed);
        self.slots.add_permits(settled);
    }
}

/// Hands the broker's confirms of one channel to its [`Confirms`].
struct OnConfirm(Arc<Confirms>);

#[async_trait::async_trait]
impl ChannelCallback for OnConfirm {
    async fn close(&mut self, _: &Channel, _: CloseChannel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, _: bool) -> Result<bool, amqprs::error::Error> {
        Ok(true)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0
            .settle(ack.delivery_tag(), ack.mutiple(), &self.0.confirmed);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0
            .settle(nack.delivery_tag(), nack.multiple(), &self.0.refused);
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// Opens a connection to the broker `uri` names.
async fn connect(uri: &lapin::uri::AMQPUri) -> anyhow::Result<Connection> {
    let authority = &uri.authority;
    let arguments = OpenConnectionArguments::new(
        &authority.host,
        authority.port,
        &authority.userinfo.username,
        &authority.userinfo.password,
    )
    .virtual_host(&uri.vhost)
    .finish();
    Ok(Connection::open(&arguments).await?)
}

/// Publishes persistent `payload`s to the default exchange for `queue` until `deadline` on one
/// channel of `connection`, [`IN_FLIGHT`] confirms in flight; how many were confirmed.
async fn publish_until(
    connection: &Connection,
    queue: &str,
    payload: &[u8],
    deadline: Instant,
) -> anyhow::Result<u64> {
    let channel = connection.open_channel(None).await?;
    let confirms = Arc::new(Confirms {
        unconfirmed: Mutex::new(BTreeSet::new()),
        slots: tokio::sync::Semaphore::new(IN_FLIGHT),
        confirmed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    channel
        .register_callback(OnConfirm(Arc::clone(&confirms)))
        .await?;
    channel
        .confirm_select(ConfirmSelectArguments::default())
        .await?;
    let properties = BasicProperties::default().with_persistence(true).finish();
    let arguments = BasicPublishArguments::new("", queue);
    let mut tag = 0;
    while Instant::now() < deadline {
        confirms.slots.acquire().await?.forget();
        tag += 1;
        confirms
            .unconfirmed
            .lock()
            .expect("not poisoned")
            .insert(tag);
        channel
            .basic_publish(properties.clone(), payload.to_vec(), arguments.clone())
            .await?;
    }
    let all = u32::try_from(IN_FLIGHT)?;
    tokio::time::timeout(Duration::from_secs(30), confirms.slots.acquire_many(all))
        .await
        .context("the last confirms, within 30 s")??
        .forget();
    anyhow::ensure!(
        confirms.refused.load(Ordering::Relaxed) == 0,
        "the broker refused a publish"
    );
    channel
        .close()
        .await
        .context("closing a publisher's channel")?;
    Ok(confirms.confirmed.load(Ordering::Relaxed))
}

/// Messages per second through publish-with-confirms and consume-with-acks on a quorum queue,
/// as [`crate::raw::round_trip`] measures them, with amqprs.
pub async fn round_trip(test: Test<'_>) -> anyhow::Result<Measured> {
    let (queue, payload, duration) = (test.name.as_str(), test.payload, test.duration);
    let uri = test.uri.clone();
    let connection = connect(&uri).await?;
    let consuming = connection.open_channel(None).await?;
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-queue-type".try_into()?,
        FieldValue::S("quorum".try_into()?),
    );
    consuming
        .queue_declare(
            QueueDeclareArguments::durable_client_named(queue)
                .arguments(arguments)
                .finish(),
        )
        .await?;
    consuming
        .basic_qos(BasicQosArguments::new(0, 512, false))
        .await?;
    let (_, mut deliveries) = consuming
        .basic_consume_rx(
            BasicConsumeArguments::new(queue, "raw")
                .manual_ack(true)
                .finish(),
        )
        .await?;
    let started = Instant::now();
    let deadline = started + duration;
    let consumer = tokio::spawn(async move {
        let (mut consumed, mut in_time) = (0u64, 0u64);
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(2), deliveries.recv()).await
        {
            let tag = message.deliver.context("a delivery")?.delivery_tag();
            consuming
                .basic_ack(BasicAckArguments::new(tag, false))
                .await?;
            consumed += 1;
            if Instant::now() <= deadline {
                in_time += 1;
            }
        }
        // Closed here, before the connection: a channel dropped open closes itself in a task of
        // its own, which can race the connection's close.
        consuming
            .close()
            .await
            .context("closing the consumer's channel")?;
        anyhow::Ok([consumed, in_time])
    });
    let publishers = (0..PUBLISHERS).map(|_| publish_until(&connection, queue, payload, deadline));
    let published: u64 = futures_util::future::try_join_all(publishers)
        .await?
        .into_iter()
        .sum();
    anyhow::ensure!(published > 0, "nothing was published");
    let [consumed, in_time] = consumer.await?.context("consuming")?;
    connection.close().await.context("closing the connection")?;

    let connection = connect(&uri).await?;
    let channel = connection.open_channel(None).await?;
    channel
        .queue_delete(QueueDeleteArguments::new(queue))
        .await
        .context("deleting the queue")?;
    channel.close().await.context("closing the channel")?;
    connection
        .close()
        .await
        .context("closing the second connection")?;
    Ok(Measured {
        rate: in_time as f64 / duration.as_secs_f64(),
        messages: consumed,
    })
}

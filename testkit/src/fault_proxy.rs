//! A small TCP fault proxy: sits between a service and RabbitMQ, Redis or PostgreSQL so a test
//! can cut, stall or slow the connection without touching the shared server itself.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Close every open connection and refuse new ones (accept, then close at once).
    Drop,
    /// Keep connections open but forward nothing, as a partitioned network does.
    Blackhole,
    /// Forward everything, each chunk delayed by this much.
    Latency(Duration),
    /// Forward everything, each chunk delayed by the first ± up to the second (uniformly), in
    /// order: a slow, uneven link.
    Jitter(Duration, Duration),
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), upstream).await
    }

    /// Starts a proxy on an ephemeral port of `ip`, forwarding to `upstream`.
    pub async fn start_on(ip: std::net::IpAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (fault, watcher) = watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watcher = watcher.clone();
                let fault = *watcher.borrow();
                if fault == Fault::Drop {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        splice(client, server, watcher).await;
                    }
                });
            }
        });
        Ok(Self { addr, fault, task })
    }

    /// The address services should connect to instead of the real server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault for current and future connections.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.fault.send_replace(Fault::Drop);
        self.task.abort();
    }
}

async fn splice(client: TcpStream, server: TcpStream, watcher: watch::Receiver<Fault>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, watcher.clone()) => {}
        () = pump(server_read, client_write, watcher) => {}
    }
}

/// Copies one direction until either side closes or the fault becomes `Drop`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut watcher: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let fault = *watcher.borrow_and_update();
        match fault {
            Fault::Drop => return,
            Fault::Blackhole => {
                if watcher.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Fault::Pass | Fault::Latency(_) | Fault::Jitter(..) => {}
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = watcher.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let fault = *watcher.borrow();
        match fault {
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Jitter(delay, spread) => {
                let spread = u64::try_from(spread.as_millis()).unwrap_or(0);
                let base = u64::try_from(delay.as_millis()).unwrap_or(0);
                let millis = base.saturating_sub(spread) + fastrand::u64(0..=2 * spread);
                tokio::time::sleep(Duration::from_millis(millis)).await;
            }
            _ => {}
        }
        let fault = *watcher.borrow();
        if fault == Fault::Drop || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A fault proxy in front of each backend, and backends that go through them.
pub struct Faulty {
    /// In front of RabbitMQ.
    pub amqp: FaultProxy,
    /// In front of Redis.
    pub redis: FaultProxy,
    /// In front of PostgreSQL.
    pub postgres: FaultProxy,
    /// The same backends and namespace, reached through the proxies.
    pub backends: shared::config::Backends,
}

impl Faulty {
    /// Starts the three proxies in front of `backends`' servers, on loopback.
    pub async fn start(backends: &shared::config::Backends) -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), backends).await
    }

    /// Starts the three proxies on `ip` (a bridge's address, for hosts in network namespaces).
    pub async fn start_on(ip: std::net::IpAddr, backends: &shared::config::Backends) -> Self {
        let amqp_uri = &backends.amqp[0];
        let amqp = proxy(ip, &amqp_uri.authority.host, amqp_uri.authority.port).await;
        let redis::ConnectionAddr::Tcp(host, port) = backends.redis.addr() else {
            panic!("the fault proxy needs Redis over plain TCP");
        };
        let redis = proxy(ip, host, *port).await;
        let postgres = proxy(
            ip,
            backends.database.get_host(),
            backends.database.get_port(),
        )
        .await;

        let mut through = backends.clone();
        let mut uri = amqp_uri.clone();
        uri.authority.host = ip.to_string();
        uri.authority.port = amqp.addr().port();
        through.amqp = vec![uri];
        through.redis = redis::IntoConnectionInfo::into_connection_info(
            format!("redis://{}", redis.addr()).as_str(),
        )
        .expect("valid Redis URL");
        through.database = backends
            .database
            .clone()
            .host(&ip.to_string())
            .port(postgres.addr().port());
        Self {
            amqp,
            redis,
            postgres,
            backends: through,
        }
    }
}

async fn proxy(ip: std::net::IpAddr, host: &str, port: u16) -> FaultProxy {
    let host = if host.starts_with('/') || host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let upstream = tokio::net::lookup_host((host, port))
        .await
        .expect("resolve the backend")
        .next()
        .expect("the backend has an address");
    FaultProxy::start_on(ip, upstream)
        .await
        .expect("start a fault proxy")
}

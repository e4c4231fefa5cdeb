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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
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
            Fault::Pass | Fault::Latency(_) => {}
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
        if let Fault::Latency(delay) = fault {
            tokio::time::sleep(delay).await;
        }
        let fault = *watcher.borrow();
        if fault == Fault::Drop || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

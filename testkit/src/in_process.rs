//! Services built in the test's own process through their production `Application::build`:
//! [`test_config!`](crate::test_config) makes a service's configuration for a test,
//! [`InProcess`] runs services until they are stopped, and [`Killable`] runs one that can be
//! ended at once, as SIGKILL ends a process.

use std::{future::Future, net::SocketAddr, time::Duration};

use shared::service::{App, Serving};
use tokio::{sync::oneshot, task::JoinHandle};

/// A service's real configuration (`$config::load()`, the environment over the defaults) for a
/// test: on a free port of 127.0.0.1, with a 5 s drain, on `$backends`.
#[macro_export]
macro_rules! test_config {
    ($config:path, $backends:expr) => {{
        let mut config = <$config>::load().expect("the default configuration is valid");
        config.serving = $crate::in_process::serving(config.serving);
        config.backends = $backends;
        config
    }};
}

/// A service's serving settings for a test: a free port on 127.0.0.1, and a 5 s drain.
pub fn serving(serving: Serving) -> Serving {
    Serving {
        addr: "127.0.0.1:0".parse().expect("valid address"),
        shutdown_deadline: Duration::from_secs(5),
        ..serving
    }
}

/// Services built in the test's own process, each run until it is stopped. Dropped with some
/// still running (a test that panicked, say), it tells them to stop: they drain on their own
/// instead of working on in a namespace being removed.
#[derive(Default)]
pub struct InProcess(Vec<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>);

impl InProcess {
    /// Runs a built service until it is stopped; its address.
    pub fn launch(&mut self, built: anyhow::Result<App>) -> SocketAddr {
        let app = built.expect("the service builds");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        self.0.push((stop, task));
        addr
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Stops the most recently launched service, waiting for its drain.
    pub async fn stop_last(&mut self) {
        let (stop, task) = self.0.pop().expect("something is running");
        let _ = stop.send(());
        task.await.expect("task").expect("stops cleanly");
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for (stop, _) in self.0.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// A service built and run on a runtime and a thread of its own, so that [`Self::kill`] can
/// end it at once: its tasks are dropped wherever they stand and its connections closed
/// unannounced (the broker requeues the deliveries it held, PostgreSQL rolls back what it had
/// not committed), nothing drained, as when its process is SIGKILLed. Dropped, it is killed.
pub struct Killable {
    addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Killable {
    /// Builds a service with `build` (an `Application::build`) on a new thread's runtime and
    /// runs it; once it listens.
    pub async fn launch<F, Fut>(build: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<App>>,
    {
        let (listening, addr) = oneshot::channel();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let app = build().await.expect("the service builds");
                let _ = listening.send(app.local_addr());
                tokio::spawn(app.run_until(std::future::pending()));
                let _ = killed.await;
            });
            // Dropping the runtime drops every task it ran, here and now.
            drop(runtime);
        });
        Self {
            addr: addr.await.expect("the service builds"),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends it at once; returns once every task of it is gone and its connections are closed.
    pub async fn kill(mut self) {
        self.signal();
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("joined")
                .expect("the service's thread ended");
        }
    }

    fn signal(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.signal();
    }
}

//! Running the real service binaries as child processes, for harnesses that kill, restart and
//! measure them: the fault-injection run and the benchmark.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// How to start the services: their directory, environment and addresses.
pub struct Services {
    /// Where the service binaries are.
    pub dir: PathBuf,
    /// Environment given to every service.
    pub env: Vec<(String, String)>,
    /// `GATEWAY_ADDR`, fixed so clients find a restarted gateway.
    pub gateway_addr: String,
    /// `PROCESSOR_ADDR`.
    pub processor_addr: String,
    /// `NOTIFIER_ADDR`.
    pub notifier_addr: String,
    /// Where each service's output goes (`<name>.log`).
    pub logs: PathBuf,
    /// `DATABASE_URL` of each service that logs in as a user of its own ([`Self::own_roles`]).
    database_urls: Vec<(&'static str, String)>,
}

/// The backends' URLs as the environment gives them (local defaults otherwise):
/// `[AMQP_URL, REDIS_URL, DATABASE_URL]`.
pub fn env_urls() -> [String; 3] {
    use shared::config::{DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL};
    [
        ("AMQP_URL", DEFAULT_AMQP_URL),
        ("REDIS_URL", DEFAULT_REDIS_URL),
        ("DATABASE_URL", DEFAULT_DATABASE_URL),
    ]
    .map(|(name, default)| std::env::var(name).unwrap_or_else(|_| default.to_owned()))
}

impl Services {
    /// Services in `backends`' namespace (its shard count, the test retry ladder) reaching the
    /// backends at `urls` (`[amqp, redis, database]`), logging at `log_filter` into
    /// `<binaries>/<label>-<namespace>/`. The binaries are the ones beside the running program.
    pub fn new(
        backends: &shared::config::Backends,
        urls: [String; 3],
        log_filter: &str,
        label: &str,
    ) -> std::io::Result<Self> {
        let dir = std::env::current_exe()?
            .parent()
            .expect("a program lives in a directory")
            .to_path_buf();
        let logs = dir.join(format!("{label}-{}", backends.namespace.as_str()));
        std::fs::create_dir_all(&logs)?;
        let [amqp, redis, database] = urls;
        let env = [
            ("AMQP_URL", amqp),
            ("REDIS_URL", redis),
            ("DATABASE_URL", database),
            ("PIPELINE_NAMESPACE", backends.namespace.as_str().to_owned()),
            ("INGEST_SHARDS", backends.ingest_shards.to_string()),
            ("RETRY_DELAYS_MS", crate::sandbox::retry_delays_ms()),
            ("RUST_LOG", log_filter.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(Self {
            dir,
            env,
            gateway_addr: crate::ports::free_addr(),
            processor_addr: crate::ports::free_addr(),
            notifier_addr: crate::ports::free_addr(),
            logs,
            database_urls: Vec::new(),
        })
    }

    /// Runs each service as a PostgreSQL user of its own, as a deployment does
    /// ([`crate::postgres::role_logins`]): `faults_<service>`, without a password.
    pub async fn own_roles(&mut self, backends: &shared::config::Backends) -> anyhow::Result<()> {
        crate::postgres::role_logins(backends, "faults", false).await?;
        let database = self
            .env
            .iter()
            .find(|(name, _)| name == "DATABASE_URL")
            .map(|(_, url)| url.clone())
            .expect("DATABASE_URL is in every service's environment");
        for role in shared::connect::postgres::roles::Role::ALL {
            let mut url = reqwest::Url::parse(&database)?;
            url.set_username(&format!("faults_{}", role.service()))
                .map_err(|()| anyhow::anyhow!("DATABASE_URL takes no user name"))?;
            self.database_urls.push((role.service(), url.to_string()));
        }
        Ok(())
    }

    /// Starts the binary `name`, appending its output to `<logs>/<name>.log`.
    pub fn spawn(&self, name: &str) -> Child {
        self.spawn_as(name, name, &[])
    }

    /// Starts the binary `name` with `env` over the common environment (another address or
    /// node list for a second replica), appending its output to `<logs>/<log>.log`.
    pub fn spawn_as(&self, name: &str, log: &str, env: &[(&str, &str)]) -> Child {
        self.start(Command::new(self.dir.join(name)), name, log, env)
    }

    /// [`Self::spawn_as`] inside `host`'s network namespace.
    pub fn spawn_in(
        &self,
        host: &crate::netns::Host,
        name: &str,
        log: &str,
        env: &[(&str, &str)],
    ) -> Child {
        self.start(host.command(&self.dir.join(name)), name, log, env)
    }

    fn start(&self, mut command: Command, name: &str, log: &str, env: &[(&str, &str)]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{log}.log")))
            .expect("open a log file");
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("GATEWAY_ADDR", &self.gateway_addr)
            .env("PROCESSOR_ADDR", &self.processor_addr)
            .env("NOTIFIER_ADDR", &self.notifier_addr)
            .envs(
                self.database_urls
                    .iter()
                    .filter(|(service, _)| *service == name)
                    .map(|(_, url)| ("DATABASE_URL", url.as_str())),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a file handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (build the binaries first): {e}"))
    }
}

/// Starts the service `service` (its binary `binary`) for the first time, on an empty
/// namespace of its own, with `env` and its address variable `addr_var` set, at `info` in JSON,
/// until `/ready` answers the client `client(backends)` makes once it runs (within `wait`);
/// stops it with SIGTERM; and checks that it said it stopped and logged no warning or error.
pub async fn first_start_is_quiet(
    service: &str,
    binary: &str,
    addr_var: &str,
    env: &[(&str, String)],
    client: impl AsyncFnOnce(&shared::config::Backends) -> reqwest::Client,
    wait: Duration,
) {
    let sandbox = crate::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let addr = crate::ports::free_addr();
    let log_path = std::env::temp_dir().join(format!("{}-first.log", backends.namespace.as_str()));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut child = Command::new(binary)
        .env("PIPELINE_NAMESPACE", backends.namespace.as_str())
        .env("INGEST_SHARDS", backends.ingest_shards.to_string())
        .env(addr_var, &addr)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(log.try_clone().expect("a file handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts");
    crate::wait::until_ready(&client(&backends).await, &format!("http://{addr}"), wait).await;
    sigterm(&mut child).await;
    let logs = std::fs::read_to_string(&log_path).expect("the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.contains(&format!("{service} stopped")), "{logs}");
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        .collect();
    assert!(loud.is_empty(), "a first start warned: {loud:#?}");
}

/// Sends SIGTERM and waits (up to 30 s) for the process to drain and exit.
pub async fn sigterm(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

/// Replaces the `host:port` of `url` with `addr`.
pub fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let slash = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{userinfo}{addr}{slash}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn through_keeps_credentials_and_path() {
        let addr = "127.0.0.1:9".parse().expect("valid");
        assert_eq!(
            through("amqp://guest:guest@127.0.0.1:5672/%2f", addr),
            "amqp://guest:guest@127.0.0.1:9/%2f"
        );
        assert_eq!(
            through("redis://127.0.0.1:6379", addr),
            "redis://127.0.0.1:9"
        );
        assert_eq!(
            through("postgres://postgres@localhost:5432/pipeline", addr),
            "postgres://postgres@127.0.0.1:9/pipeline"
        );
    }
}

//! TLS servers of the tests' own, never the shared ones: a certificate authority made for the
//! run ([`Certs`]), a PostgreSQL cluster ([`TlsPostgres`]) and a Redis ([`TlsRedis`]) that take
//! TLS connections only, on free loopback ports (the RabbitMQ node is
//! [`crate::cluster::Cluster::start_tls`]); [`TlsBackends`] starts all three. Each stops and
//! removes its directory when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;

use shared::{config::Backends, connect::tls::Ca};

use crate::{cluster::Cluster, ports::free_port};

/// PostgreSQL, Redis and a RabbitMQ node that take TLS only, with one authority, and the
/// [`Backends`] that reach them in a new namespace: `sslmode=verify-full` with the authority as
/// `sslrootcert`, `rediss://`, `amqps://`, and the authority as [`Backends::tls_ca`].
pub struct TlsBackends {
    /// The authority and the servers' certificate.
    pub certs: Certs,
    /// PostgreSQL.
    pub postgres: TlsPostgres,
    /// Redis.
    pub redis: TlsRedis,
    /// The RabbitMQ node.
    pub rabbitmq: Cluster,
    /// The settings that reach them.
    pub backends: Backends,
}

impl TlsBackends {
    /// Starts the three servers (the RabbitMQ node named after `prefix`).
    pub async fn start(prefix: &str) -> anyhow::Result<Self> {
        let certs = Certs::generate()?;
        let postgres = TlsPostgres::start(&certs)?;
        let redis = TlsRedis::start(&certs)?;
        let rabbitmq = Cluster::start_tls(prefix, &certs).await?;
        let mut backends = crate::sandbox::backends_in(&crate::sandbox::namespace());
        backends.database = postgres
            .url(&format!(
                "sslmode=verify-full&sslrootcert={}",
                certs.ca.display()
            ))
            .parse()?;
        backends.redis = redis::IntoConnectionInfo::into_connection_info(redis.url().as_str())?;
        backends.amqp = vec![
            rabbitmq_url(&rabbitmq)
                .parse()
                .map_err(anyhow::Error::msg)?,
        ];
        backends.tls_ca = Some(Ca::load(certs.ca.clone()).map_err(anyhow::Error::msg)?);
        Ok(Self {
            certs,
            postgres,
            redis,
            rabbitmq,
            backends,
        })
    }

    /// `AMQP_URL` for the RabbitMQ node.
    pub fn amqp_url(&self) -> String {
        rabbitmq_url(&self.rabbitmq)
    }

    /// Stops the RabbitMQ node cleanly (the others stop when dropped).
    pub async fn stop(self) {
        self.rabbitmq.stop().await;
    }
}

fn rabbitmq_url(rabbitmq: &Cluster) -> String {
    format!(
        "amqps://guest:guest@127.0.0.1:{}/%2f",
        rabbitmq.nodes[0].port
    )
}

/// A certificate authority and a server certificate it signed, for `localhost` and
/// `127.0.0.1`, as PEM files in a directory of their own.
pub struct Certs {
    dir: PathBuf,
    /// The authority's certificate: what a client must trust.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Certs {
    /// Makes a new authority and server certificate under the system's temporary directory.
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = unique_dir("tls-certs")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pipeline test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &ca)?;
        let certs = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            dir,
        };
        std::fs::write(&certs.ca, ca.pem())?;
        std::fs::write(&certs.cert, server.pem())?;
        std::fs::write(&certs.key, key.serialize_pem())?;
        Ok(certs)
    }

    /// Copies the authority, certificate and key into `dir` (for a server that runs as another
    /// user and wants its own files); returns their paths.
    pub fn install(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
        let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
            let to = dir.join(name);
            std::fs::copy(from, &to).with_context(|| format!("copy to {}", to.display()))?;
            Ok(to)
        };
        Ok((
            copy(&self.ca, "ca.crt")?,
            copy(&self.cert, "server.crt")?,
            copy(&self.key, "server.key")?,
        ))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of its own (the installed server's binaries) that refuses every
/// connection but TLS ones (`hostssl` only), with trust authentication for `postgres` and
/// passwords (scram-sha-256) for every other user.
pub struct TlsPostgres {
    dir: PathBuf,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl TlsPostgres {
    /// Makes and starts the cluster (as the `postgres` user when run as root, since PostgreSQL
    /// refuses to run as root).
    pub fn start(certs: &Certs) -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = unique_dir("pg-tls")?;
        let (_, _, key) = certs.install(&dir)?;
        let port = free_port();
        let server = Self { dir, bin, port };
        let data = server.dir.join("data");
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.dir))?;
        }
        run(server
            .as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data))?;
        let dir = server.dir.display();
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\n"
        );
        append(&data.join("postgresql.conf"), &settings)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all postgres 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        // The server refuses a key others can read.
        run(Command::new("chmod").arg("600").arg(&key))?;
        run(server
            .as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(server.dir.join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start"))?;
        Ok(server)
    }

    /// `DATABASE_URL` for this server with the query `params` (`sslmode=...`).
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/pipeline?{params}",
            self.port
        )
    }

    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis of its own that listens for TLS connections only (no client certificate asked).
pub struct TlsRedis {
    dir: PathBuf,
    child: Child,
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
}

impl TlsRedis {
    /// Starts `redis-server` with a TLS port and no plain one, and waits until it listens.
    pub fn start(certs: &Certs) -> anyhow::Result<Self> {
        let dir = unique_dir("redis-tls")?;
        let (ca, cert, key) = certs.install(&dir)?;
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--tls-port",
                &port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server runs")?;
        let redis = Self { dir, child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// `REDIS_URL` for this server.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The installed PostgreSQL server's binaries (Debian's layout; the newest version).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)")?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A new directory under the system's temporary directory, readable by every user (servers
/// running as their own users reach their files in it).
fn unique_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("{command:?} runs"))?;
    crate::cluster::check(&format!("{command:?}"), &output)
}

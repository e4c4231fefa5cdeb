//! Loopback ports: a free one to bind (free when asked: bind it soon), and URLs where nothing
//! listens (a dependency that is down).

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A loopback address with a free port (`127.0.0.1:PORT`).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A `scheme://127.0.0.1:PORT` URL where nothing listens.
pub fn closed_port_url(scheme: &str) -> String {
    format!("{scheme}://{}", free_addr())
}

//! Test support shared by the services' integration tests (never linked into a service).
//!
//! - [`sandbox`]: a namespace of the test's own on the real RabbitMQ, Redis and PostgreSQL
//!   (from the environment, local defaults), removed when its [`sandbox::Sandbox`] is dropped,
//!   a failing test's too.
//! - [`broker`], [`redis`], [`postgres`]: a client for each backend, to look into what a test's
//!   services did and to act past them.
//! - [`keys`]: API keys in a namespace, and HTTP clients that send them.
//! - [`wait`]: polls with a deadline instead of sleeping.
//! - [`http`], [`metrics`]: reading a service's answers and its Prometheus text.
//! - [`in_process`]: services built in the test's own process ([`test_config!`]);
//!   [`services`]: the real service binaries as child processes.
//! - [`ports`]: free loopback ports, and URLs where nothing listens.
//! - [`fault_proxy`], [`sabotage`]: a TCP proxy that cuts, stalls or slows a connection on
//!   demand; writes PostgreSQL refuses.
//! - [`netns`]: hosts of a run's own in network namespaces, whose links are cut, made lossy
//!   and healed.
//! - [`cluster`], [`tls`], [`s3`]: servers of the tests' own (a RabbitMQ cluster, TLS-only
//!   backends, an S3 API).
//! - [`webhooks`], [`spans`]: a webhook receiver that records what it gets; spans kept in
//!   memory.
#![forbid(unsafe_code)]

pub mod broker;
pub mod cluster;
pub mod fault_proxy;
pub mod http;
pub mod in_process;
pub mod keys;
pub mod metrics;
pub mod netns;
pub mod ports;
pub mod postgres;
pub mod redis;
pub mod s3;
pub mod sabotage;
pub mod sandbox;
pub mod services;
pub mod spans;
pub mod tls;
pub mod wait;
pub mod webhooks;

//! Outbound requests to addresses users give us (webhook endpoints, and any other fetch the
//! pipeline makes) never reach private networks unless configured to: loopback, private
//! (RFC 1918, fc00::/7), link-local, shared (CGNAT), multicast, unspecified, reserved and
//! documentation ranges, and IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) of
//! those classes are refused.
//!
//! A URL is checked when it is given ([`Egress::check_url`]: every address its host resolves to
//! must be public) and again at connect time: [`Egress::client`] builds an HTTP client whose
//! resolver drops refused addresses (so a name that changes to a private address after the
//! check, DNS rebinding, still cannot be reached), that follows no redirect and uses no proxy;
//! an IP literal, which no resolver sees, is checked per request ([`Egress::check_host`]).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Whether outbound requests may reach private networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    allow_private: bool,
}

/// `url` as a log line, a span or an answer may show it: no user name or password, and every
/// query value `REDACTED` (a webhook's or an image source's query often carries a token).
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        shown
            .query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "REDACTED")));
    }
    shown.set_fragment(None);
    shown.to_string()
}

/// A failed outbound request in a sentence an operator (or the caller who gave the URL) can act
/// on: what went wrong and its innermost cause (such as the guard's refusal of a private
/// address), never the URL, which reqwest's own message repeats in full.
pub fn describe(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_timeout() {
        "the endpoint did not answer in time".to_owned()
    } else if error.is_connect() {
        format!("cannot connect to the endpoint: {cause}")
    } else {
        format!("the request failed: {cause}")
    }
}

/// [`redacted`] for a URL kept as text; one that does not parse is not shown at all.
pub fn redacted_str(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "(not a valid URL)".to_owned(), |url| redacted(&url))
}

/// Why an outbound address is refused. The message names the host as given and the class of
/// address, never the address it resolved to nor what the resolver said: a caller probing with
/// URLs learns nothing of the internal network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The host is, or resolves to, an address of a refused class.
    #[error(
        "{host} is or resolves to a {class} address; outbound requests may not reach private networks"
    )]
    Private {
        /// The URL's host.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// Its class (`loopback`, `private`, ...).
        class: &'static str,
    },
    /// The host does not resolve.
    #[error("{host} does not resolve")]
    Unresolvable {
        /// The URL's host.
        host: String,
        /// What the resolver said.
        error: String,
    },
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
}

impl Egress {
    /// Refuses private networks unless `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// The class of `ip` when it is refused, `None` when it may be reached.
    pub fn refused(self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private { None } else { class(ip) }
    }

    /// Checks a URL's host as it is now: an IP literal must be public, and so must every address
    /// a name resolves to.
    pub async fn check_url(self, url: &Url) -> Result<(), EgressError> {
        if self.allow_private {
            return Ok(());
        }
        let host = url.host_str().ok_or(EgressError::NoHost)?;
        if self.check_host(url)? {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses =
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| EgressError::Unresolvable {
                    host: host.to_owned(),
                    error: e.to_string(),
                })?;
        for address in addresses {
            if let Some(class) = class(address.ip()) {
                return Err(EgressError::Private {
                    host: host.to_owned(),
                    address: address.ip(),
                    class,
                });
            }
        }
        Ok(())
    }

    /// Checks a URL whose host is an IP literal (true: it is one, and may be reached); false
    /// when the host is a name, left to the resolver.
    pub fn check_host(self, url: &Url) -> Result<bool, EgressError> {
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(false),
            None => return Err(EgressError::NoHost),
        };
        match self.refused(literal) {
            Some(class) => Err(EgressError::Private {
                host: literal.to_string(),
                address: literal,
                class,
            }),
            None => Ok(true),
        }
    }

    /// An HTTP client builder that resolves through the guard, follows no redirect and uses no
    /// proxy (a proxy would do the connecting, out of the guard's sight).
    pub fn client(self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(self))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
    }
}

impl Resolve for Egress {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = *self;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| guard.refused(a.ip()).is_none())
                .collect();
            match (allowed.is_empty(), resolved.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(EgressError::Private {
                    host,
                    address: first.ip(),
                    class: class(first.ip()).unwrap_or("refused"),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(Box::new(EgressError::Unresolvable {
                    host,
                    error: "no address".into(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// The class of an address that outbound requests must not reach, or `None` for a public one.
pub fn class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn class_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        (192, 0, 0) => "reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ => return None,
    })
}

fn class_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // IPv4 addresses carried inside IPv6 are judged as what they carry.
    let embedded = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return class_v4(v4);
    }
    match segments {
        // IPv4-compatible (deprecated) and NAT64's well-known prefix.
        [0, 0, 0, 0, 0, 0, high, low] | [0x64, 0xff9b, 0, 0, 0, 0, high, low] => {
            return class_v4(embedded(high, low));
        }
        // 6to4.
        [0x2002, high, low, ..] => return class_v4(embedded(high, low)),
        _ => {}
    }
    Some(match segments[0] {
        s if s & 0xfe00 == 0xfc00 => "private",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "private",
        s if s & 0xff00 == 0xff00 => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        // Teredo tunnels to whatever address it hides: not allowed.
        0x2001 if segments[1] == 0 => "reserved",
        0x0100 if segments[1..4] == [0, 0, 0] => "reserved",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_has_no_credentials_and_no_query_values() {
        let url = Url::parse("https://user:pw@hooks.example.com:8443/in?token=s3cret&x=1#f")
            .expect("a URL");
        assert_eq!(
            redacted(&url),
            "https://hooks.example.com:8443/in?token=REDACTED&x=REDACTED"
        );
        assert_eq!(
            redacted_str("https://hooks.example.com/in"),
            "https://hooks.example.com/in"
        );
        assert_eq!(redacted_str("not a url ?token=s3cret"), "(not a valid URL)");
    }

    #[test]
    fn a_refusal_names_the_host_given_but_not_where_it_points() {
        let refused = EgressError::Private {
            host: "images.internal".into(),
            address: "10.1.2.3".parse().expect("an address"),
            class: "private",
        }
        .to_string();
        assert!(
            refused.contains("images.internal") && !refused.contains("10.1.2.3"),
            "{refused}"
        );
        let unresolvable = EgressError::Unresolvable {
            host: "nowhere.invalid".into(),
            error: "lookup via 10.0.0.53 failed".into(),
        }
        .to_string();
        assert!(!unresolvable.contains("10.0.0.53"), "{unresolvable}");
    }

    fn of(ip: &str) -> Option<&'static str> {
        class(ip.parse().expect("an address"))
    }

    #[test]
    fn every_private_class_is_refused() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "reserved"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.7", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("::127.0.0.1", "loopback"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "reserved"),
        ] {
            assert_eq!(of(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(of(ip), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_by_literal_and_by_name() {
        let guard = Egress::new(false);
        let url = |u: &str| Url::parse(u).expect("a URL");
        assert!(matches!(
            guard.check_url(&url("http://169.254.169.254/latest")).await,
            Err(EgressError::Private {
                class: "link-local",
                ..
            })
        ));
        assert!(matches!(
            guard.check_url(&url("http://[::ffff:7f00:1]:8080/")).await,
            Err(EgressError::Private {
                class: "loopback",
                ..
            })
        ));
        assert!(matches!(
            guard.check_url(&url("http://localhost:9/hook")).await,
            Err(EgressError::Private {
                class: "loopback",
                ..
            })
        ));
        assert_eq!(
            guard.check_url(&url("https://93.184.216.34/hook")).await,
            Ok(())
        );
        assert_eq!(
            Egress::new(true)
                .check_url(&url("http://127.0.0.1:9/hook"))
                .await,
            Ok(())
        );
    }
}

//! Where a webhook may send: an `http(s)` URL whose host is not link-local
//! (169.254.0.0/16, where clouds serve instance metadata and credentials,
//! and fe80::/10). A literal address is refused when the webhook is created;
//! a name is checked each time it is resolved for a delivery, so a name that
//! later resolves there is refused without connecting. Loopback and private
//! addresses are allowed: receivers often run next to the server.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::Uri;
use hyper_util::client::legacy::connect::dns::Name;

/// Whether an address is link-local, IPv4-mapped IPv6 included.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_link_local(),
            None => (v6.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// The URL of a webhook, or why it is refused (said of the field `url`).
pub fn parse_url(text: &str) -> Result<Uri, String> {
    let text = text.trim();
    if let Some((scheme, _)) = text.split_once("://")
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(format!("the scheme must be http or https, not '{scheme}'"));
    }
    let uri: Uri = text.parse().map_err(|e| format!("not a valid URL ({e})"))?;
    let scheme = uri
        .scheme_str()
        .ok_or("not a valid URL (an absolute http or https URL is needed)")?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!("the scheme must be http or https, not '{scheme}'"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("not a valid URL (no host)")?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) if is_link_local(ip) => Err(LINK_LOCAL.into()),
        _ => Ok(uri),
    }
}

const LINK_LOCAL: &str = "link-local addresses (169.254.0.0/16, fe80::/10) are refused: they \
    reach the cloud's instance metadata";

/// Resolves names for deliveries and refuses any that resolves to a
/// link-local address: the delivery fails before a connection is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardedResolver;

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        Box::pin(resolve(name.as_str().to_string()))
    }
}

async fn resolve(host: String) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    if let Some(bad) = addrs.iter().find(|a| is_link_local(a.ip())) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{host} resolves to {}: {LINK_LOCAL}", bad.ip()),
        ));
    }
    Ok(addrs.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_are_recognised_in_both_families() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_link_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "::1",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(!is_link_local(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn only_http_urls_to_other_than_link_local_hosts_are_taken() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.com/x?y=1",
            "http://[::1]:9000/",
            "http://10.1.2.3/",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("ftp://example.com/", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
            ("not a url", "not a valid URL"),
            ("http://", "not a valid URL"),
        ] {
            let refused = parse_url(bad).unwrap_err();
            assert!(refused.contains(why), "{bad}: {refused}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_link_local_address_is_refused() {
        let local: Vec<SocketAddr> = resolve("localhost".into()).await.unwrap().collect();
        assert!(!local.is_empty());
        assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
        // A name of the form of an address resolves to it without DNS.
        for name in ["169.254.169.254", "fe80::1"] {
            let refused = resolve(name.into()).await.unwrap_err().to_string();
            assert!(refused.contains("link-local"), "{refused}");
        }
    }
}

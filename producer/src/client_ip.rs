//! Who the client is, for the rate limit and the per-client cap: the signed-in
//! customer where there is one (a NAT puts many behind one address), else the
//! address. `X-Forwarded-For` is believed only from a trusted proxy, read from
//! the right: the first address that is not a trusted proxy is the client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::auth::SignedIn;

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a CIDR block (e.g. 10.0.0.0/24) or an IP address")]
pub struct InvalidProxy(pub String);

/// The networks whose connections may tell who the client is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From a comma-separated list of CIDR blocks or addresses.
    pub fn parse(list: &str) -> Result<Self, InvalidProxy> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| InvalidProxy(entry.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // Several headers count as one list, in order (RFC 9110, 5.3).
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or_default().split(','));
        let mut client = peer;
        for entry in entries.rev() {
            let Some(ip) = parse_entry(entry) else {
                // Only the untrusted write garbage; keep the last trusted hop.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }

    /// The client of `request`: its signed-in customer, else its address.
    pub(crate) fn client_of(&self, request: &Request) -> Client {
        if let Some(SignedIn(Some(customer))) = request.extensions().get::<SignedIn>() {
            return Client::Customer(customer.clone());
        }
        // The server loop always sets it; without it (a test calling the router
        // directly) every request counts as one client.
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Client::address(self.client_ip(peer, request.headers()))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    IpAddr::from_str(entry)
        .ok()
        .or_else(|| SocketAddr::from_str(entry).ok().map(|addr| addr.ip()))
        .map(|ip| ip.to_canonical())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    Customer(String),
    /// An IPv4 address, or an IPv6 /64 (one subscriber usually holds a whole
    /// /64, and could otherwise change address for every request).
    Address(IpAddr),
}

impl Client {
    pub fn address(ip: IpAddr) -> Self {
        Self::Address(match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
            v4 => v4,
        })
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Customer(customer) => write!(f, "customer {customer}"),
            Self::Address(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    }

    fn alb_subnets() -> TrustedProxies {
        TrustedProxies::parse("10.0.0.0/24, 10.0.1.0/24").expect("valid")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            alb_subnets().client_ip(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.5"), &headers),
            ip("10.0.0.5"),
            "nothing trusted: even a private peer is the client"
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_address() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn addresses_the_client_prepends_to_the_header_are_ignored() {
        // The client sent "X-Forwarded-For: 1.2.3.4, 10.0.1.9"; the balancer
        // appended the address it saw.
        let headers = forwarded(&["1.2.3.4, 10.0.1.9, 198.51.100.7"]);
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
        // Split over two headers, the same.
        let headers = forwarded(&["1.2.3.4", "198.51.100.7"]);
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let headers = forwarded(&["198.51.100.7, 10.0.1.20"]);
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let headers = forwarded(&["not-an-ip, 10.0.1.20"]);
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &headers),
            ip("10.0.1.20")
        );
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses_are_understood() {
        let headers = forwarded(&["198.51.100.7:4711"]);
        assert_eq!(
            alb_subnets().client_ip(ip("::ffff:10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
        let headers = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(
            alb_subnets().client_ip(ip("10.0.0.5"), &headers),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn a_bad_trusted_proxy_entry_is_named() {
        let err = TrustedProxies::parse("10.0.0.0/24, vpc").expect_err("invalid");
        assert!(err.to_string().contains("\"vpc\""), "{err}");
        assert!(TrustedProxies::parse(" ").expect("empty").is_empty());
        assert!(
            TrustedProxies::parse("10.0.0.1")
                .expect("one address")
                .trusts(ip("10.0.0.1"))
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        assert_eq!(
            Client::address(ip("2001:db8:1:2:aaaa::1")),
            Client::address(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Client::address(ip("2001:db8:1:2::1")),
            Client::address(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::address(ip("198.51.100.7")),
            Client::Address(ip("198.51.100.7"))
        );
    }
}

//! The client's address behind trusted proxies. Behind an ingress every TCP peer is
//! the ingress, so rate limits and `x-real-ip` would lump all clients together;
//! the ingress says who it talked to in `X-Forwarded-For`.
//!
//! That header is believed only as far as it was written by proxies we trust. Each
//! proxy appends the address it saw, so the list is read from the right: the first
//! address that is not a trusted proxy is the client. Anything left of it was
//! written by the client itself and is ignored.

use std::net::{IpAddr, SocketAddr};

use agora_kit::net::IpRange;
use http::HeaderMap;

/// The header proxies append the address they saw to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address: `peer` itself unless `peer` is a trusted proxy, else the
/// right-most address in `X-Forwarded-For` that is not one. If every listed hop is
/// trusted, the left-most is the client; an entry that is not an address ends the
/// walk at the last hop vouched for.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    // Several X-Forwarded-For lines form one list, in order (RFC 9110 §5.3).
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for hop in line.rsplit(',') {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !is_trusted(ip) {
                return client;
            }
        }
    }
    client
}

/// One list entry: an address, optionally with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, line.parse().unwrap());
        }
        headers
    }

    const INGRESS: &str = "10.0.0.5";

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let headers = forwarded(&["198.51.100.1"]);

        let client = client_address(ip("203.0.113.9"), &headers, &ranges(&["10.0.0.0/8"]));

        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let headers = forwarded(&["198.51.100.1"]);

        assert_eq!(client_address(ip(INGRESS), &headers, &[]), ip(INGRESS));
    }

    #[test]
    fn behind_a_trusted_ingress_the_client_is_the_address_it_appended() {
        let headers = forwarded(&["203.0.113.9"]);

        let client = client_address(ip(INGRESS), &headers, &ranges(&["10.0.0.0/8"]));

        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn spoofed_left_most_entries_are_ignored() {
        // The client sent `X-Forwarded-For: 1.2.3.4, 5.6.7.8`; the ingress appended
        // the address it really saw.
        let headers = forwarded(&["1.2.3.4, 5.6.7.8, 203.0.113.9"]);

        let client = client_address(ip(INGRESS), &headers, &ranges(&["10.0.0.0/8"]));

        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right() {
        // client -> CDN edge (192.0.2.10) -> ingress (10.0.0.5) -> gateway; split
        // over two header lines.
        let headers = forwarded(&["6.6.6.6, 203.0.113.9", "192.0.2.10"]);
        let trusted = ranges(&["10.0.0.0/8", "192.0.2.0/24"]);

        assert_eq!(
            client_address(ip(INGRESS), &headers, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let headers = forwarded(&["10.1.1.1, 10.2.2.2"]);

        let client = client_address(ip(INGRESS), &headers, &ranges(&["10.0.0.0/8"]));

        assert_eq!(client, ip("10.1.1.1"));
    }

    #[test]
    fn an_unreadable_entry_stops_at_the_last_hop_vouched_for() {
        let trusted = ranges(&["10.0.0.0/8"]);

        let garbage = forwarded(&["203.0.113.9, unknown, 10.2.2.2"]);
        assert_eq!(
            client_address(ip(INGRESS), &garbage, &trusted),
            ip("10.2.2.2")
        );

        let missing = HeaderMap::new();
        assert_eq!(client_address(ip(INGRESS), &missing, &trusted), ip(INGRESS));
    }

    #[test]
    fn ports_and_mapped_addresses_are_understood() {
        let trusted = ranges(&["10.0.0.0/8"]);

        let headers = forwarded(&["[2001:db8::7]:4711"]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.5"), &headers, &trusted),
            ip("2001:db8::7")
        );

        let headers = forwarded(&["203.0.113.9:4711"]);
        assert_eq!(
            client_address(ip(INGRESS), &headers, &trusted),
            ip("203.0.113.9")
        );
    }
}

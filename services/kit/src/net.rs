//! Address ranges in CIDR notation, as `AGORA_TRUSTED_PROXIES` lists them. Only
//! what deciding "is this peer one of ours" needs: parsing, display, membership.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network, e.g. `10.0.0.0/8`; a bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    /// The first address, host bits cleared.
    network: IpAddr,
    prefix: u8,
}

/// Text that is neither an address nor `address/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range")]
pub struct InvalidIpRange(pub String);

impl IpRange {
    /// The range of `prefix` leading bits of `address`; host bits are cleared, so
    /// `10.1.2.3/8` means `10.0.0.0/8`. `None` if the prefix is too long.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps,
        // since peers are compared in canonical form.
        let (address, prefix) = match address.to_canonical() {
            IpAddr::V4(v4) if address.is_ipv6() && prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (address, prefix),
        };
        let network = match address {
            IpAddr::V4(v4) if prefix <= 32 => IpAddr::V4((u32::from(v4) & v4_mask(prefix)).into()),
            IpAddr::V6(v6) if prefix <= 128 => {
                IpAddr::V6((u128::from(v6) & v6_mask(prefix)).into())
            }
            _ => return None,
        };
        Some(Self { network, prefix })
    }

    /// Whether `ip` is in the range. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`,
    /// as a dual-stack socket reports IPv4 peers) count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix) == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix) == u128::from(network)
            }
            _ => false,
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpRange {
    type Err = InvalidIpRange;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidIpRange(raw.to_owned());
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => {
                let address: IpAddr = address.parse().map_err(|_| invalid())?;
                // Digits only: `u8::from_str` would also take `+8`.
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                (address, prefix.parse().map_err(|_| invalid())?)
            }
            None => {
                let address: IpAddr = raw.parse().map_err(|_| invalid())?;
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
        };
        Self::new(address, prefix).ok_or_else(invalid)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(raw: &str) -> IpRange {
        raw.parse().unwrap()
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn a_cidr_range_holds_exactly_its_addresses() {
        let private = range("10.0.0.0/8");
        assert!(private.contains(ip("10.0.0.1")));
        assert!(private.contains(ip("10.255.255.255")));
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(!private.contains(ip("::1")));

        let v6 = range("fd00::/8");
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
    }

    #[test]
    fn a_bare_address_is_a_range_of_one() {
        let one = range("192.0.2.7");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        assert_eq!(range("2001:db8::1").to_string(), "2001:db8::1/128");
    }

    #[test]
    fn host_bits_are_cleared_and_zero_prefix_holds_everything() {
        assert_eq!(range("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert!(range("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(range("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        assert!(range("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(range("::ffff:10.0.0.0/104").contains(ip("10.0.0.1")));
        assert_eq!(range("::ffff:192.0.2.7").to_string(), "192.0.2.7/32");
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for raw in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "example.com",
        ] {
            assert!(raw.parse::<IpRange>().is_err(), "{raw}");
        }
    }
}

//! `--gateway-address-pool` (operator, and proxy in standalone mode): the addresses Gateways
//! get one each of (see [`super::translate`]). Parsed here once for both binaries.

use std::net::IpAddr;

/// The most addresses a pool may hold (far more Gateways than a cluster has).
pub const POOL_LIMIT: usize = 4096;

/// A pool over [`POOL_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--gateway-address-pool holds more than {POOL_LIMIT} addresses; give a smaller block")]
pub struct PoolTooLarge;

/// One comma-separated entry: an address, or a CIDR block's host addresses (an IPv4 block of
/// more than two addresses without its network and broadcast addresses).
pub fn parse_entry(text: &str) -> Result<Vec<IpAddr>, String> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(vec![address]);
    }
    let net: ipnet::IpNet = text
        .parse()
        .map_err(|_| format!("{text:?}: expected an address or a CIDR block like 10.0.10.0/24"))?;
    Ok(net.hosts().take(POOL_LIMIT + 1).collect())
}

/// The entries' addresses in the order given, each once.
pub fn collect(entries: &[Vec<IpAddr>]) -> Result<Vec<IpAddr>, PoolTooLarge> {
    let mut out: Vec<IpAddr> = Vec::new();
    for address in entries.iter().flatten() {
        if !out.contains(address) {
            out.push(*address);
        }
        if out.len() > POOL_LIMIT {
            return Err(PoolTooLarge);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_blocks_in_order_each_once() {
        let entries = [
            parse_entry("127.0.10.0/30").expect("block"),
            parse_entry(" 127.0.10.9 ").expect("address"),
            parse_entry("127.0.10.1").expect("address"),
        ];
        let pool = collect(&entries).expect("pool");
        let text: Vec<String> = pool.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["127.0.10.1", "127.0.10.2", "127.0.10.9"]);
        assert!(parse_entry("10.0.0.0/33").is_err());
        assert!(parse_entry("gateway").is_err());
        assert_eq!(
            collect(&[parse_entry("10.0.0.0/16").expect("block")]),
            Err(PoolTooLarge)
        );
    }
}

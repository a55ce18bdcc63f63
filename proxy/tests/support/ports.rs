//! Loopback ports for child processes in tests. One file, included by the test support of
//! each crate that starts processes (`#[path]`): the proxy, redis-conn and the operator.

/// A loopback port for a child process (the proxy binary, redis-server) to listen on.
///
/// Not `bind(:0)`: that port comes from the kernel's ephemeral range, which outgoing
/// connections also draw from, so between the probe closing and the child binding, a parallel
/// test's client connection can take it as its local port and the child fails with "address in
/// use" (a rare failure, seen once in CI). This picks ports below that range instead, each at
/// most once per test binary, starting at an offset from the process id so that two binaries
/// run at once rarely meet, and checks each is free.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low > LOW + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = LOW + (start + n) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_low}");
}

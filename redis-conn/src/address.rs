//! Parsing of the multi-host address forms redis-rs has no URL for:
//! `redis+sentinel://[user:password@]host:port,…/<master>[/db]` and
//! `redis+cluster://[user:password@]host:port,…` (`rediss+…` for TLS).
//!
//! Error texts name the part that is wrong but never quote the user-info part of the URL,
//! which holds the password.

/// The default port of a sentinel when a host has none.
const SENTINEL_PORT: u16 = 26379;
/// The default port of a cluster node when a host has none.
const CLUSTER_PORT: u16 = 6379;

/// Which kind of deployment a multi-host address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Sentinels, asked for the current primary of `master`.
    Sentinel,
    /// Seeds of a Redis Cluster.
    Cluster,
}

/// A parsed `redis+sentinel://` or `redis+cluster://` address.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MultiAddress {
    pub mode: Mode,
    /// `rediss+…`: TLS to every node (sentinels and primary, or every cluster node).
    pub tls: bool,
    /// Sentinels or cluster seeds, in the given order.
    pub hosts: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sentinel master name (empty for a cluster).
    pub master: String,
    /// The database (always 0 for a cluster).
    pub db: i64,
}

impl std::fmt::Debug for MultiAddress {
    // The password never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiAddress")
            .field("mode", &self.mode)
            .field("tls", &self.tls)
            .field("hosts", &self.hosts)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("master", &self.master)
            .field("db", &self.db)
            .finish()
    }
}

/// `Some` for the sentinel and cluster schemes, `None` for anything else (left to redis-rs).
///
/// # Errors
/// A description of what is wrong, without the password.
pub(crate) fn parse(url: &str) -> Option<Result<MultiAddress, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let (mode, tls) = match scheme.to_ascii_lowercase().as_str() {
        "redis+sentinel" => (Mode::Sentinel, false),
        "rediss+sentinel" => (Mode::Sentinel, true),
        "redis+cluster" => (Mode::Cluster, false),
        "rediss+cluster" => (Mode::Cluster, true),
        _ => return None,
    };
    Some(parse_rest(mode, tls, rest))
}

fn parse_rest(mode: Mode, tls: bool, rest: &str) -> Result<MultiAddress, String> {
    // The last '@' ends the user info: a password may hold '/', '?' or even '@'.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (info, None),
            };
            let user = decode(user, "user name")?;
            let password = password.map(|p| decode(p, "password")).transpose()?;
            (
                (!user.is_empty()).then_some(user),
                password.filter(|p| !p.is_empty()),
            )
        }
    };
    if rest.contains(['?', '#']) {
        return Err("query parameters and fragments are not supported".into());
    }
    let (hosts, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let default_port = match mode {
        Mode::Sentinel => SENTINEL_PORT,
        Mode::Cluster => CLUSTER_PORT,
    };
    let hosts = hosts
        .split(',')
        .map(|h| parse_host(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<&str> = match path.strip_prefix('/') {
        None => Vec::new(),
        Some(p) => p.strip_suffix('/').unwrap_or(p).split('/').collect(),
    };
    let (master, db) = match mode {
        Mode::Sentinel => match segments.as_slice() {
            [master] if !master.is_empty() => (decode(master, "master name")?, 0),
            [master, db] if !master.is_empty() => (decode(master, "master name")?, parse_db(db)?),
            _ => {
                return Err(
                    "a sentinel address needs the master name: redis+sentinel://HOST:PORT,…/MASTER[/DB]"
                        .into(),
                )
            }
        },
        Mode::Cluster => match segments.as_slice() {
            [] | [""] | ["0"] => (String::new(), 0),
            _ => return Err("a Redis Cluster has only database 0 and takes no path".into()),
        },
    };
    Ok(MultiAddress {
        mode,
        tls,
        hosts,
        username,
        password,
        master,
        db,
    })
}

fn parse_db(db: &str) -> Result<i64, String> {
    db.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("the database {db:?} is not a number ≥ 0"))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host(item: &str, default_port: u16) -> Result<(String, u16), String> {
    if item.is_empty() {
        return Err("empty host in the host list".into());
    }
    let (host, port) = if let Some(v6) = item.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in host {item:?}"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected text after ']' in host {item:?}")),
            },
        }
    } else {
        match item.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (item, None),
        }
    };
    if host.is_empty()
        || host.contains(|c: char| c.is_whitespace() || c == ':' && !item.starts_with('['))
    {
        return Err(format!("invalid host {item:?}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port in host {item:?}"))?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding (`%40` is `@`), as in `redis://` URLs.
fn decode(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in the {what}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> MultiAddress {
        match parse(url) {
            Some(Ok(a)) => a,
            other => panic!("{url}: {other:?}"),
        }
    }

    fn err(url: &str) -> String {
        match parse(url) {
            Some(Err(e)) => e,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn other_schemes_are_left_to_redis_rs() {
        for url in [
            "redis://h:1",
            "rediss://h",
            "redis+unix:///s",
            "http://x",
            "nothing",
        ] {
            assert!(parse(url).is_none(), "{url}");
        }
    }

    #[test]
    fn sentinel_with_several_hosts_master_and_db() {
        let a = ok("redis+sentinel://s1:26379,s2:26380,s3/mymaster/3");
        assert_eq!(a.mode, Mode::Sentinel);
        assert!(!a.tls);
        assert_eq!(
            a.hosts,
            vec![
                ("s1".to_string(), 26379),
                ("s2".to_string(), 26380),
                ("s3".to_string(), 26379)
            ]
        );
        assert_eq!(a.master, "mymaster");
        assert_eq!(a.db, 3);
        assert_eq!(a.username, None);
        assert_eq!(a.password, None);
        let a = ok("rediss+sentinel://10.0.0.1:5000/primary/");
        assert!(a.tls);
        assert_eq!(a.master, "primary");
        assert_eq!(a.db, 0);
    }

    #[test]
    fn passwords_with_special_characters() {
        let a = ok("redis+sentinel://app:p%40ss%3Aw%2Frd@s1:1,s2:2/m");
        assert_eq!(a.username.as_deref(), Some("app"));
        assert_eq!(a.password.as_deref(), Some("p@ss:w/rd"));
        // Unencoded '@', '/' and ':' in the password still work: the last '@' ends it.
        let a = ok("redis+cluster://:pa:s/s@w@n1:7000,n2:7001");
        assert_eq!(a.username, None);
        assert_eq!(a.password.as_deref(), Some("pa:s/s@w"));
        assert_eq!(a.hosts.len(), 2);
        assert_eq!(a.master, "");
    }

    #[test]
    fn cluster_seeds_and_ipv6() {
        let a = ok("rediss+cluster://[::1]:7000,[fe80::1],node-3/0");
        assert_eq!(a.mode, Mode::Cluster);
        assert!(a.tls);
        assert_eq!(
            a.hosts,
            vec![
                ("::1".to_string(), 7000),
                ("fe80::1".to_string(), 6379),
                ("node-3".to_string(), 6379)
            ]
        );
    }

    #[test]
    fn bad_forms_are_refused_without_the_password() {
        let cases = [
            ("redis+sentinel://:hunter2@s1:26379", "master name"),
            ("redis+sentinel://:hunter2@s1:26379/", "master name"),
            ("redis+sentinel://:hunter2@s1:26379/m/x", "database"),
            ("redis+sentinel://:hunter2@s1:26379/m/1/2", "master name"),
            ("redis+sentinel://:hunter2@s1:26379,,s2/m", "empty host"),
            ("redis+sentinel://:hunter2@s1:99999/m", "invalid port"),
            ("redis+sentinel://:hunter2@s1:0/m", "invalid port"),
            ("redis+sentinel://:hunter2@/m", "empty host"),
            ("redis+cluster://:hunter2@n1:7000/2", "database 0"),
            ("redis+cluster://:hunter2@n1:7000?x=1", "query"),
            ("redis+cluster://:hunt%zzer2@n1:7000", "percent-encoding"),
            ("redis+cluster://:hunter2@[::1:7000", "unclosed"),
        ];
        for (url, expected) in cases {
            let e = err(url);
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("hunt"), "{url}: {e}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let a = ok("redis+sentinel://u:hunter2@s1/m");
        let text = format!("{a:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

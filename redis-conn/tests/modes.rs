//! The three deployment modes and a private CA against real redis-server processes:
//! Sentinel (with a failover), Cluster (scripts, SCAN on every primary, MGET across slots) and
//! `rediss://` with `ca_file`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use redis::AsyncCommands;
use support::{free_port, wait_until, Server, TempDir};
use tollgate_redis::{connect, mget_u64, scan_keys, ConnectError, ReadError, RedisConfig};

fn config(url: String) -> RedisConfig {
    RedisConfig {
        timeout: Duration::from_secs(1),
        ..RedisConfig::new(url)
    }
}

/// `SENTINEL get-master-addr-by-name mymaster`'s port.
fn sentinel_primary_port(sentinel: &Server) -> String {
    sentinel
        .cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn write_sentinel_conf(dir: &Path, port: u16, primary: u16, extra: &str) {
    let conf = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\n{extra}\
         sentinel monitor mymaster 127.0.0.1 {primary} 1\n\
         sentinel down-after-milliseconds mymaster 1000\n\
         sentinel failover-timeout mymaster 3000\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("sentinel.conf"), conf).expect("write sentinel.conf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_follows_a_failover_to_the_promoted_replica() {
    let tmp = TempDir::new("sentinel");
    let mut primary = Server::plain(&tmp.sub("primary"), &[]);
    let primary_port = primary.port.to_string();
    let replica = Server::plain(
        &tmp.sub("replica"),
        &["--replicaof", "127.0.0.1", &primary_port],
    );
    let sentinel_dir = tmp.sub("sentinel");
    let sport = free_port();
    write_sentinel_conf(&sentinel_dir, sport, primary.port, "");
    let sentinel = Server::start(&sentinel_dir, sport, &["sentinel.conf", "--sentinel"], &[]);
    // The sentinel must know the synced replica before the primary dies, or there is nobody
    // to promote.
    wait_until(Duration::from_secs(20), "the replica to sync", || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let replica_port = replica.port.to_string();
    wait_until(
        Duration::from_secs(20),
        "the sentinel to see the replica",
        || {
            sentinel
                .cli(&["SENTINEL", "replicas", "mymaster"])
                .contains(&replica_port)
        },
    );

    let mut conn = connect(&config(format!(
        "redis+sentinel://127.0.0.1:{sport}/mymaster"
    )))
    .expect("lazy connection");
    for expected in 1..=3 {
        let n: u64 = conn.incr("tollgate:test:counter", 1).await.expect("INCR");
        assert_eq!(n, expected);
    }
    // It is the primary that answered.
    assert_eq!(primary.cli(&["GET", "tollgate:test:counter"]).trim(), "3");
    // The replica has the count before the primary dies.
    wait_until(
        Duration::from_secs(20),
        "the replica to copy the count",
        || replica.cli(&["GET", "tollgate:test:counter"]).trim() == "3",
    );

    primary.kill();
    let started = Instant::now();
    let mut failures = 0;
    let n = loop {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no new primary after {failures} failed attempts"
        );
        match tokio::time::timeout(
            Duration::from_secs(2),
            conn.incr::<_, _, u64>("tollgate:test:counter", 1),
        )
        .await
        {
            Ok(Ok(n)) => break n,
            _ => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        failures >= 1,
        "the first call after the kill cannot have succeeded"
    );
    assert_eq!(n, 4, "the promoted replica continues the count");
    assert_eq!(sentinel_primary_port(&sentinel), replica_port);
    assert_eq!(replica.cli(&["GET", "tollgate:test:counter"]).trim(), "4");
    // Clones share the re-found primary.
    let mut clone = conn.clone();
    let n: u64 = clone
        .incr("tollgate:test:counter", 1)
        .await
        .expect("INCR on a clone");
    assert_eq!(n, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_with_password_and_db_reaches_the_primary() {
    let tmp = TempDir::new("sentinel-auth");
    let auth = ["-a", "s3cr@t/pw", "--no-auth-warning"];
    let primary =
        Server::plain_with_cli(&tmp.sub("primary"), &["--requirepass", "s3cr@t/pw"], &auth);
    let sentinel_dir = tmp.sub("sentinel");
    let sport = free_port();
    write_sentinel_conf(
        &sentinel_dir,
        sport,
        primary.port,
        "requirepass s3cr@t/pw\n",
    );
    std::fs::write(
        sentinel_dir.join("sentinel.conf"),
        std::fs::read_to_string(sentinel_dir.join("sentinel.conf")).expect("read")
            + "sentinel auth-pass mymaster s3cr@t/pw\n",
    )
    .expect("write");
    let _sentinel = Server::start(
        &sentinel_dir,
        sport,
        &["sentinel.conf", "--sentinel"],
        &auth,
    );
    let url = format!("redis+sentinel://:s3cr%40t%2Fpw@127.0.0.1:{sport}/mymaster/2");
    let mut conn = connect(&config(url)).expect("lazy connection");
    let () = conn.set("tollgate:test:db", "7").await.expect("SET");
    assert_eq!(
        primary.cli(&["-n", "2", "GET", "tollgate:test:db"]).trim(),
        "7"
    );

    // A wrong password fails, and the error does not show it.
    let mut wrong = connect(&config(format!(
        "redis+sentinel://:hunter2@127.0.0.1:{sport}/mymaster"
    )))
    .expect("lazy connection");
    let err = wrong
        .get::<_, Option<String>>("x")
        .await
        .expect_err("wrong password");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Three masters, no replicas, all 16384 slots assigned.
struct Cluster {
    nodes: Vec<Server>,
    _tmp: TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_in(TempDir::new("cluster"), None)
    }

    /// Three nodes in `tmp`; with `pki`, TLS only (clients and the cluster bus).
    fn start_in(tmp: TempDir, pki: Option<&Pki>) -> Cluster {
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        let nodes: Vec<Server> = (0..3)
            .map(|i| {
                let dir = tmp.sub(&format!("n{i}"));
                match pki {
                    None => Server::plain(&dir, &cluster_args),
                    Some(pki) => {
                        let mut args = cluster_args.to_vec();
                        args.extend_from_slice(&["--tls-cluster", "yes"]);
                        tls_server(&dir, pki, &args)
                    }
                }
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(&nodes[0].cli_args)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for node in &nodes {
            wait_until(Duration::from_secs(20), "cluster_state:ok", || {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        Cluster { nodes, _tmp: tmp }
    }

    fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scripts_scan_and_mget_across_nodes() {
    let cluster = Cluster::start();
    let mut conn = connect(&config(cluster.url())).expect("lazy connection");

    // A quota-style script: two keys sharing a hash tag, so one slot.
    let script = redis::Script::new(
        "redis.call('INCRBY', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1]) + 100",
    );
    let r: u64 = script
        .key("tollgate:quota:{shop/acme}:day:20261123")
        .key("tollgate:quota-op:{shop/acme}:day:20261123:t1")
        .arg(5)
        .invoke_async(&mut conn)
        .await
        .expect("script");
    assert_eq!(r, 105);

    // Counters under many tags: they land on every node.
    let tags: Vec<String> = (0..30).map(|i| format!("ns/sub{i}")).collect();
    let keys: Vec<String> = tags
        .iter()
        .map(|t| format!("tollgate:quota:{{{t}}}:month:20261101"))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let () = conn.set(key, i as u64).await.expect("SET");
    }
    let () = conn.set("other:{ns/sub1}", "x").await.expect("SET");
    for node in &cluster.nodes {
        let here: usize = node.cli(&["DBSIZE"]).trim().parse().expect("DBSIZE");
        assert!(here >= 2, "node {} holds {here} keys", node.port);
    }

    let mut expected = keys.clone();
    expected.push("tollgate:quota:{shop/acme}:day:20261123".into());
    expected.sort();
    let found = scan_keys(&conn, "tollgate:quota:*", 1000)
        .await
        .expect("scan");
    assert_eq!(found, expected);
    let some = scan_keys(&conn, "tollgate:quota:*", 5).await.expect("scan");
    assert_eq!(some.len(), 5);
    assert!(some.iter().all(|k| expected.contains(k)));

    // MGET across slots (and nodes), in order, None for a missing key.
    let mut asked = keys.clone();
    asked.insert(3, "tollgate:quota:{nobody}:day:1".into());
    let values = mget_u64(&conn, &asked).await.expect("mget");
    let mut want: Vec<Option<u64>> = (0..keys.len() as u64).map(Some).collect();
    want.insert(3, None);
    assert_eq!(values, want);
    let err = mget_u64(&conn, &["other:{ns/sub1}"])
        .await
        .expect_err("not a counter");
    assert!(
        matches!(err, ReadError::NotACounter { ref key } if key == "other:{ns/sub1}"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_sentinel_down_at_start_are_not_start_errors() {
    let dead = free_port();
    for url in [
        format!("redis+cluster://127.0.0.1:{dead}"),
        format!("redis+sentinel://127.0.0.1:{dead}/mymaster"),
    ] {
        let mut conn = connect(&RedisConfig {
            timeout: Duration::from_millis(200),
            ..RedisConfig::new(url.clone())
        })
        .expect("lazy");
        let started = Instant::now();
        let r = conn.get::<_, Option<String>>("k").await;
        assert!(r.is_err(), "{url}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{url}: {:?}",
            started.elapsed()
        );
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, written as PEM files.
struct Pki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pki.ca, ca.pem()).expect("write");
    std::fs::write(&pki.cert, cert.pem()).expect("write");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write");
    pki
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn tls_server(dir: &Path, pki: &Pki, extra: &[&str]) -> Server {
    let port = free_port();
    let port_text = port.to_string();
    let mut args = vec![
        "--port",
        "0",
        "--tls-port",
        &port_text,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-cert-file",
        path(&pki.cert),
        "--tls-key-file",
        path(&pki.key),
        "--tls-ca-cert-file",
        path(&pki.ca),
        "--tls-auth-clients",
        "no",
    ];
    args.extend_from_slice(extra);
    Server::start(dir, port, &args, &["--tls", "--cacert", path(&pki.ca)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let tmp = TempDir::new("tls");
    let pki = make_pki(tmp.path(), "private");
    let other = make_pki(tmp.path(), "other");
    let server = tls_server(&tmp.sub("redis"), &pki, &[]);
    let url = format!("rediss://127.0.0.1:{}", server.port);

    let mut conn = connect(&RedisConfig {
        ca_file: Some(pki.ca.clone()),
        ..config(url.clone())
    })
    .expect("lazy");
    let n: u64 = conn
        .incr("tollgate:test:tls", 2)
        .await
        .expect("INCR over TLS");
    assert_eq!(n, 2);
    assert_eq!(server.cli(&["GET", "tollgate:test:tls"]).trim(), "2");

    // The system roots do not know the private CA, nor does another CA.
    for ca_file in [None, Some(other.ca.clone())] {
        let mut conn = connect(&RedisConfig {
            ca_file: ca_file.clone(),
            ..config(url.clone())
        })
        .expect("lazy");
        let r = conn.incr::<_, _, u64>("tollgate:test:tls", 1).await;
        assert!(r.is_err(), "{ca_file:?}: {r:?}");
    }
    assert_eq!(server.cli(&["GET", "tollgate:test:tls"]).trim(), "2");

    // A file that is not a CA bundle is a start error naming it.
    let err = connect(&RedisConfig {
        ca_file: Some(pki.key.clone()),
        ..config(url.clone())
    })
    .expect_err("a key is not a CA bundle");
    assert!(matches!(err, ConnectError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains(path(&pki.key)), "{err}");
    // And a CA for an address without TLS is refused.
    let err = connect(&RedisConfig {
        ca_file: Some(pki.ca.clone()),
        ..config(format!("redis://127.0.0.1:{}", server.port))
    })
    .expect_err("no TLS");
    assert!(err.to_string().contains("rediss://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel_with_a_private_ca() {
    let tmp = TempDir::new("tls-sentinel");
    let pki = make_pki(tmp.path(), "private");
    let primary = tls_server(&tmp.sub("primary"), &pki, &["--tls-replication", "yes"]);
    let sentinel_dir = tmp.sub("sentinel");
    let sport = free_port();
    let tls = format!(
        "tls-port {sport}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
         tls-auth-clients no\ntls-replication yes\n",
        path(&pki.cert),
        path(&pki.key),
        path(&pki.ca)
    );
    write_sentinel_conf(&sentinel_dir, 0, primary.port, &tls);
    let _sentinel = Server::start(
        &sentinel_dir,
        sport,
        &["sentinel.conf", "--sentinel"],
        &["--tls", "--cacert", path(&pki.ca)],
    );
    let url = format!("rediss+sentinel://127.0.0.1:{sport}/mymaster");
    let mut conn = connect(&RedisConfig {
        ca_file: Some(pki.ca.clone()),
        ..config(url.clone())
    })
    .expect("lazy");
    let n: u64 = conn
        .incr("tollgate:test:tls", 1)
        .await
        .expect("INCR over TLS");
    assert_eq!(n, 1);
    assert_eq!(primary.cli(&["GET", "tollgate:test:tls"]).trim(), "1");

    let mut conn = connect(&config(url)).expect("lazy");
    assert!(conn
        .incr::<_, _, u64>("tollgate:test:tls", 1)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_with_a_private_ca() {
    let tmp = TempDir::new("tls-cluster");
    let pki = make_pki(tmp.path(), "private");
    let cluster = Cluster::start_in(tmp, Some(&pki));
    let url = cluster
        .url()
        .replace("redis+cluster://", "rediss+cluster://");
    let mut conn = connect(&RedisConfig {
        ca_file: Some(pki.ca.clone()),
        ..config(url.clone())
    })
    .expect("lazy");
    for i in 0..10u64 {
        let () = conn
            .set(format!("tollgate:quota:{{t{i}}}:day:1"), i)
            .await
            .expect("SET over TLS");
    }
    let keys = scan_keys(&conn, "tollgate:quota:*", 100)
        .await
        .expect("scan");
    assert_eq!(keys.len(), 10);
    let values = mget_u64(&conn, &keys).await.expect("mget");
    assert_eq!(values.iter().flatten().sum::<u64>(), 45);

    let mut conn = connect(&config(url)).expect("lazy");
    assert!(conn
        .get::<_, Option<u64>>("tollgate:quota:{t1}:day:1")
        .await
        .is_err());
}

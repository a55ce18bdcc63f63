//! Unit tests of the configuration checks (no Redis needed).

use super::*;

#[test]
fn debug_never_shows_the_url_password() {
    for url in [
        "redis://:hunter2@cache:6379",
        "redis+sentinel://u:hunter2@s1:26379,s2:26379/mymaster",
        "rediss+cluster://:hunter2@n1:7000,n2:7001",
    ] {
        let c = RedisConfig::new(url);
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("://…"), "{text}");
    }
}

#[tokio::test]
async fn every_form_is_accepted_without_connecting() {
    for url in [
        "redis://127.0.0.1:1/2",
        "rediss://cache.example:6380",
        "redis+unix:///run/redis.sock",
        "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster",
        "rediss+sentinel://u:p%40w@s1.example:26379/mymaster/4",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        "rediss+cluster://:pw@n1.example:7000",
    ] {
        let conn = connect(&RedisConfig::new(url)).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!format!("{conn:?}").contains("p%40w"));
    }
}

#[tokio::test]
async fn bad_urls_are_refused_without_echoing_the_password() {
    for url in [
        "http://:hunter2@cache",
        "redis+sentinel://:hunter2@s1:26379",
        "redis+cluster://:hunter2@n1:7000/3",
        "redis+sentinel://:hunter2@s1:http/m",
    ] {
        let err = connect(&RedisConfig::new(url)).expect_err(url);
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.starts_with("--redis: invalid Redis URL"), "{text}");
        assert!(text.contains("redis+sentinel://"), "{text}");
    }
}

#[tokio::test]
async fn a_missing_password_file_is_named() {
    let err = connect(&RedisConfig {
        password_file: Some("/nonexistent/tollgate-redis-password".into()),
        ..RedisConfig::new("redis+cluster://127.0.0.1:1")
    })
    .expect_err("missing file");
    assert!(err.to_string().contains("--redis-password-file"), "{err}");
}

#[tokio::test]
async fn bad_ca_files_are_named() {
    let dir = std::env::temp_dir().join(format!("tollgate-redis-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let missing = dir.join("missing.pem");
    for url in [
        "rediss://:hunter2@cache:6380",
        "rediss+sentinel://:hunter2@s1/m",
        "rediss+cluster://:hunter2@n1:7000",
    ] {
        for path in [&garbage, &missing] {
            let err = connect(&RedisConfig {
                ca_file: Some(path.clone()),
                ..RedisConfig::new(url)
            })
            .expect_err("bad CA");
            let text = err.to_string();
            assert!(matches!(err, ConnectError::CaFile { .. }), "{text}");
            assert!(text.contains("--redis-ca"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Fuzz entry points: one function per `cargo fuzz` target of the proxy (`fuzz/`), shared with
//! the replay test (`tests/fuzz_corpus.rs`) so a crash found once stays fixed on stable.
//!
//! Each function takes the fuzzer's bytes, runs the code under test and asserts its invariants
//! with `assert!`: a panic here is a finding. This module exists because the code under test is
//! crate-private; it is not part of the API (hidden from the docs). Each target reaches the
//! code it tests through one or two calls, so a signature change there is a small fix here.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::bounds::FramingFault;
use crate::jwt::jwks::{KeySet, MAX_KEYS};
use crate::jwt::verify;
use crate::jwt::{IssuerKeys, IssuerRt, JwtPolicyRt};
use crate::listen::framing::{FramingGuard, Watcher};
use crate::listen::limits::DEFAULT_HEAD_TIMEOUT;
use crate::listen::server::http_builder;
use crate::observe::metrics::Metrics;
use crate::pipeline::{self, ConnInfo};
use crate::route;
use crate::source::dir::{self, ManifestFile};
use crate::state::Shared;
use crate::validate::json_scan::{JsonLimits, LimitKind, ScanError, Scanner};
use tollgate_crds::manifest::Limits;

// ---------------------------------------------------------------------------------------------
// JWT and JWKS

/// The fixed key set of the JWT targets: RSA (RS256), EC P-256 and Ed25519 public keys of the
/// test key pairs in `proxy/tests/support/keys/`.
pub const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"rsa","alg":"RS256","use":"sig","n":"wRKyfd_129Cjd3E4Lb6aPqhEfS2jz6WvkUYFGo4_b89SRtpouwCwwZheFBFJR7WGEbYqnhYksVN1ZseujNG-H-T2s8ZQ9gGSAobT3uqobraqao4d1IeB6iIf6UBjNdYrxfCNJ45_N0LS1d2QsRsuKyhZ9AmIKsIysgiSzbrJ2MpRZv77j6Q_QFViRYobLSeqQstPm2ui4t_wKdBxR-AUNlYS_81TPFtwA_w43fql99VPsfg8gyGL5gg1ke7GCJViC3GVqvqZJ0iPVzv9uYhDk7Nl-I9uDqq8rRShN_9_OihCD4WblOyNr3IVIrNDhtnGfAY-6S3NUWCBsz3qRd8kiQ","e":"AQAB"},{"kty":"EC","kid":"ec","crv":"P-256","x":"EtVKGDPAa7sZ0zCy4NJ5mXPt2lPNTFbdWMKcKP0B_lA","y":"3pGUCF_jn-m_iIoyBTmOFpfUWuWXBx2ugdxvlOGxCho"},{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"2q0FooDVSXIGC0ZsYkvIgWAG9bHg_dP9wuvakfRqook"}]}"#;

/// Tokens signed with the private halves of [`JWKS`] (RS256, ES256, EdDSA), issued by
/// [`ISSUER`] for audience `fuzz`, valid from 2023 to 2100: the only signed contents that may
/// ever verify.
pub const SIGNED_TOKENS: [&str; 3] = [
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6IiwiYXVkIjoiZnV6eiIsInN1YiI6ImFsaWNlIiwiZXhwIjo0MTAyNDQ0ODAwLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwic2NvcGUiOiJyZWFkIHdyaXRlIn0.VTeoWqbUCyrlIP973PcBUoOirYBn8EHUGENUdWfS1PvJLHvmsJIktKsoZpLgNNbB4_gcP0KGwfAWx2vYuRpAK76OMgBQrYnX6RgfX97U2g-oSQl-QRjwyMWjinRTc1l7WbqWv4HULuEjSjYU_DcCj6zSQKsHP23fwxU2rBtZNJxq0cG6_hCx9Mq1R9KBISGTx8i3pHybwweejwGIo1_p7oL_q4xAo4BC-8ciP7F1rHmwzH85XvRkEO8jX-tX4SGrm6R4T2SM2tfId5IUAZuoAnWQvX5qs5HMSb211vQABjG2LW-M71a5J1fzZ6oc26quIk5qrvWiLlxfkwgsFzX-BQ",
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6IiwiYXVkIjoiZnV6eiIsInN1YiI6ImFsaWNlIiwiZXhwIjo0MTAyNDQ0ODAwLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwic2NvcGUiOiJyZWFkIHdyaXRlIn0.DAg7pjoaFVYqkZxSs6XTd8_7nXQ4P9sbLDNaEo3XGkmARApeyoQq6t_0ABTlmo2ypcaYVqF1KOrwwetnUpgy3w",
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6IiwiYXVkIjoiZnV6eiIsInN1YiI6ImFsaWNlIiwiZXhwIjo0MTAyNDQ0ODAwLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwic2NvcGUiOiJyZWFkIHdyaXRlIn0.rh7e27BOVwKpK8Bk_sw28HuCh32D64iX9QCN8_z58jDG-YR-ixfYWxGOjrjeTRIAVUIg9m_jly4dJcZgRUqDCg",
];

/// The issuer of [`SIGNED_TOKENS`].
pub const ISSUER: &str = "https://issuer.fuzz";

/// The instant the JWT target verifies at (2027-01-15), inside the tokens' validity.
pub const JWT_NOW: i64 = 1_800_000_000;

fn key_set() -> &'static Arc<KeySet> {
    static KEYS: OnceLock<Arc<KeySet>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(KeySet::parse(JWKS.as_bytes()).expect("the fixed JWKS parses")))
}

fn jwt_policy() -> &'static JwtPolicyRt {
    static POLICY: OnceLock<JwtPolicyRt> = OnceLock::new();
    POLICY.get_or_init(|| {
        let issuer = IssuerRt {
            issuer: ISSUER.into(),
            audiences: vec!["fuzz".into()],
            keys: IssuerKeys::Inline(key_set().clone()),
        };
        JwtPolicyRt::new("fuzz/jwt".into(), vec![issuer], 30, 64)
    })
}

/// What a token's signature covers: everything before the last `.`.
fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

/// Whether `token`'s signed content is one we signed.
fn was_signed(token: &str) -> bool {
    SIGNED_TOKENS
        .iter()
        .any(|t| signed_part(t) == signed_part(token))
}

/// Token verification with a fixed key set: no input panics, and a token whose header and
/// payload were never signed by one of the keys never verifies (a forgery), neither by the
/// pure checks nor through the policy (with its verified-token cache).
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = verify::parse(token) {
        if parsed.check_signature(key_set()).is_ok() {
            assert!(was_signed(token), "a forged token's signature verified");
        }
    }
    if verifies(token) {
        assert!(was_signed(token), "a forged token was accepted");
    }
}

/// Whether the JWT target's policy (issuer [`ISSUER`], audience `fuzz`, the keys of [`JWKS`])
/// accepts `token` at [`JWT_NOW`].
pub fn verifies(token: &str) -> bool {
    // Inline keys never wait, so one poll decides.
    let mut verifying = std::pin::pin!(jwt_policy().verify(token, JWT_NOW));
    match verifying
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result.is_ok(),
        Poll::Pending => panic!("verification with inline keys waited"),
    }
}

/// JWKS documents: no input panics; a parsed set holds between 1 and [`MAX_KEYS`] keys, none
/// symmetric; and checking the signed tokens against it never panics.
pub fn jwks(data: &[u8]) {
    let Ok(keys) = KeySet::parse(data) else {
        return;
    };
    assert!(!keys.keys.is_empty() && keys.keys.len() <= MAX_KEYS);
    for k in &keys.keys {
        assert!(
            !matches!(
                k.alg,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            ),
            "a symmetric key was kept"
        );
    }
    for token in SIGNED_TOKENS {
        if let Ok(parsed) = verify::parse(token) {
            let _ = parsed.check_signature(&keys);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The streaming JSON scanner

/// The streaming JSON scanner (`data[0]` picks a chunk size and tight limits, the rest is the
/// body). With syntax-only limits it agrees with `serde_json` on validity except for numbers out
/// of `f64` range, as it promises; split into chunks it gives the same verdict as whole; and what
/// it accepts under tight limits it also accepts without them, and respects them.
pub fn json_scan(data: &[u8]) {
    let Some((&sel, doc)) = data.split_first() else {
        return;
    };
    let loose = JsonLimits::SYNTAX_ONLY;
    let whole = scan_in_chunks(doc, loose, doc.len().max(1));
    assert_eq!(
        whole,
        scan_in_chunks(doc, loose, usize::from(sel % 16) + 1),
        "the verdict depends on how the body is split"
    );
    match (&whole, serde_json::from_slice::<serde_json::Value>(doc)) {
        (Ok(()), Ok(_)) | (Err(_), Err(_)) => {}
        (Ok(()), Err(e)) if e.to_string().starts_with("number out of range") => {}
        (scanned, parsed) => panic!("scanner {scanned:?} but serde_json {parsed:?}"),
    }

    let tight = JsonLimits {
        max_depth: u32::from(sel & 7) + 1,
        max_object_members: u32::from((sel >> 3) & 3) + 1,
        max_array_length: u32::from((sel >> 5) & 3) + 1,
        max_string_length: 8 << (sel >> 7),
    };
    let tight_result = scan_in_chunks(doc, tight, doc.len().max(1));
    if let Err(ScanError::Limit { kind, limit }) = tight_result {
        let own = match kind {
            LimitKind::Depth => tight.max_depth,
            LimitKind::ObjectMembers => tight.max_object_members,
            LimitKind::ArrayLength => tight.max_array_length,
            LimitKind::StringLength => tight.max_string_length,
        };
        assert_eq!(limit, own, "a limit error names another limit's value");
    }
    if tight_result.is_ok() {
        assert_eq!(
            whole,
            Ok(()),
            "tight limits accepted what loose ones refused"
        );
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(doc) {
            assert_within(&value, &tight, 1);
        }
    }
}

fn scan_in_chunks(doc: &[u8], limits: JsonLimits, size: usize) -> Result<(), ScanError> {
    let mut scanner = Scanner::new(limits);
    for chunk in doc.chunks(size) {
        scanner.feed(chunk)?;
    }
    scanner.finish()
}

/// Containers in `value` (at nesting `depth`, 1 for the top level) respect `limits`.
fn assert_within(value: &serde_json::Value, limits: &JsonLimits, depth: u32) {
    match value {
        serde_json::Value::Array(items) => {
            assert!(depth <= limits.max_depth, "accepted nesting over maxDepth");
            assert!(items.len() <= limits.max_array_length as usize);
            items
                .iter()
                .for_each(|v| assert_within(v, limits, depth + 1));
        }
        serde_json::Value::Object(members) => {
            assert!(depth <= limits.max_depth, "accepted nesting over maxDepth");
            // serde_json keeps one of duplicate keys, so this can only undercount.
            assert!(members.len() <= limits.max_object_members as usize);
            members
                .values()
                .for_each(|v| assert_within(v, limits, depth + 1));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The framing watcher

fn watch_all<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<(u64, FramingFault)> {
    let mut watcher = Watcher::default();
    chunks.into_iter().filter_map(|c| watcher.feed(c)).collect()
}

/// The framing watcher (`data[0] % 8` cut points of 2 bytes each follow, then the stream): the
/// stream fed whole, cut at those points, and byte by byte flags the same request heads.
pub fn framing(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let cut_bytes = usize::from(n % 8) * 2;
    if rest.len() < cut_bytes {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(cut_bytes);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts {
        pieces.push(&stream[start..c]);
        start = c;
    }
    pieces.push(&stream[start..]);

    let whole = watch_all([stream]);
    assert!(whole.len() <= 1, "more than one head flagged: {whole:?}");
    assert_eq!(whole, watch_all(pieces), "cut reads change the verdict");
    assert_eq!(
        whole,
        watch_all(stream.chunks(1)),
        "byte-by-byte reads change the verdict"
    );
}

// ---------------------------------------------------------------------------------------------
// Paths and hosts

/// Percent-decode once; escapes that are not two hex digits stay as written.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let (b'%', Some(&h), Some(&l)) = (s[i], s.get(i + 1), s.get(i + 2)) {
            if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Whether some backend could read a segment of `path` as `.` or `..`: after up to two rounds
/// of percent-decoding, with `;`-parameters removed at any stage (Tomcat, Spring), splitting on
/// any `/` or `\` the decoding produced.
fn backend_sees_dot_segment(path: &str) -> bool {
    let mut forms: Vec<(Vec<u8>, u8)> = path
        .as_bytes()
        .split(|b| *b == b'/')
        .map(|s| (s.to_vec(), 0))
        .collect();
    while let Some((form, decoded)) = forms.pop() {
        let unparam = form.split(|b| *b == b';').next().unwrap_or_default();
        for piece in [&form[..], unparam] {
            if piece == b"." || piece == b".." {
                return true;
            }
        }
        if decoded < 2 {
            for piece in [&form[..], unparam] {
                let once = percent_decode(piece);
                for part in once.split(|b| *b == b'/' || *b == b'\\') {
                    forms.push((part.to_vec(), decoded + 1));
                }
            }
        }
    }
    false
}

/// Path checks and host normalisation: a path `check_path` accepts starts with `/`, has no raw or
/// once-encoded `/` or `\` inside a segment, and has no segment a backend could read as a dot
/// segment (see `backend_sees_dot_segment`); a normalised host has no ASCII capital.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let host = route::normalise_host(text);
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()));
    if route::check_path(text).is_ok() {
        assert!(text.starts_with('/'), "accepted a path without a leading /");
        assert!(!text.contains('\\'), "accepted a raw backslash");
        for segment in text.split('/') {
            let once = percent_decode(segment.as_bytes());
            assert!(
                !once.contains(&b'/') && !once.contains(&b'\\'),
                "accepted an encoded separator: {text:?}"
            );
        }
        assert!(
            !backend_sees_dot_segment(text),
            "accepted a path a backend may read as a dot segment: {text:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP/1 front end

/// The table the front-end target serves: an open product with CORS and JSON validation, a
/// product behind subscription keys, one behind JWT. Backends point at a closed loopback port,
/// so a forwarded request fails fast with 502 and no socket is ever listened on.
pub const FRONT_MANIFESTS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: open, namespace: fuzz}
spec:
  hostnames: [open.fuzz]
  basePath: /open
  backend: {url: "http://127.0.0.1:1"}
  subscriptionRequired: false
  routes:
    - {name: any, path: /}
    - {name: items, path: /items/, methods: [GET, POST, PUT]}
    - {name: exact, path: /exact, pathMatch: Exact, methods: [GET]}
  policies: [checks]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {name: checks, namespace: fuzz}
spec:
  cors: {allowOrigins: ["http://app.fuzz"], allowHeaders: [X-Subscription-Key], maxAge: 60}
  requestValidation:
    routes: [items]
    contentTypes: [application/json]
    maxBodyBytes: 4096
    json: {maxDepth: 8, maxObjectMembers: 16, maxArrayLength: 16, maxStringLength: 256}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: keyed, namespace: fuzz}
spec:
  hostnames: [api.fuzz]
  basePath: /api
  backend: {url: "http://127.0.0.1:1"}
  subscriptionRequired: true
  routes:
    - {name: read, path: /read, methods: [GET]}
    - {name: write, path: /write, methods: [POST]}
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: gold, namespace: fuzz}
spec:
  product: keyed
  routes: [read]
  rateLimit: {requests: 1000000, period: 1s}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: sub, namespace: fuzz}
spec:
  plan: gold
  subscriber: {name: Fuzz}
  keys: {secretRef: {name: fuzz-keys}}
---
apiVersion: v1
kind: Secret
metadata: {name: fuzz-keys, namespace: fuzz}
stringData: {primaryKey: fuzz-primary-key-0123456789}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: secure, namespace: fuzz}
spec:
  hostnames: [jwt.fuzz]
  basePath: /
  backend: {url: "http://127.0.0.1:1"}
  subscriptionRequired: false
  routes:
    - {name: any, path: /}
  policies: [auth]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {name: auth, namespace: fuzz}
spec:
  jwt:
    issuers: [{issuer: "https://issuer.fuzz", jwks: 'JWKS_DOC', audiences: [fuzz]}]
"#;

/// The subscription key of [`FRONT_MANIFESTS`] (public: it is only ever used here).
pub const FRONT_KEY: &str = "fuzz-primary-key-0123456789";

struct Front {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

fn front() -> &'static Front {
    static FRONT: OnceLock<Front> = OnceLock::new();
    FRONT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let shared = runtime.block_on(async {
            let shared = Shared::new(Metrics::new().expect("metrics register"));
            let files = [ManifestFile {
                name: "front.yaml".into(),
                text: FRONT_MANIFESTS.replace("JWKS_DOC", JWKS),
                over_limit: None,
            }];
            let loaded =
                dir::load(&files, &Limits::default()).expect("the front-end manifests load");
            assert!(
                !loaded.compiled.has_errors(),
                "{:?}",
                loaded.compiled.diagnostics
            );
            dir::swap_in(&shared, "dir", &loaded.compiled.table, "fuzz".into(), 1);
            Arc::new(shared)
        });
        Front { runtime, shared }
    })
}

/// The client the front-end target pretends to be.
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// The HTTP/2 connection preface: such a connection is answered in h2 frames.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Raw bytes to the real server (the proxy's connection builder, framing guard and pipeline,
/// over an in-memory stream), then end of input: it never panics, answers or closes within
/// 10 s, and what it answers starts with a well-formed HTTP/1 status line that is not 500.
pub fn http1(data: &[u8]) {
    let answer = front_answer(data);
    if answer.is_empty() || data.starts_with(H2_PREFACE) {
        return;
    }
    let line_end = answer
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("the answer has a status line");
    let line = std::str::from_utf8(&answer[..line_end]).expect("the status line is ASCII");
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .unwrap_or_else(|| panic!("not an HTTP/1 status line: {line:?}"));
    let code = status.get(..3).unwrap_or_default();
    assert!(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
        "bad status line: {line:?}"
    );
    assert_ne!(code, "500", "a request got 500: {line:?}");
}

/// Everything the front-end target's server writes back for `data` (sent, then end of input).
///
/// # Panics
/// When the server neither answers nor closes within 10 s.
pub fn front_answer(data: &[u8]) -> Vec<u8> {
    let front = front();
    let shared = front.shared.clone();
    let answer = front.runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let consumed = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (io, guard) = FramingGuard::wrap(Counted {
            inner: server,
            read: consumed.clone(),
        });
        let busy = in_flight.clone();
        let service = service_fn(move |req| {
            let conn = ConnInfo {
                peer: PEER,
                framing: guard.next_request_fault(),
                tls: None,
                socket: None,
            };
            busy.fetch_add(1, Ordering::SeqCst);
            let handling = pipeline::handle(shared.clone(), conn, req);
            let busy = busy.clone();
            async move {
                let answer = handling.await;
                busy.fetch_sub(1, Ordering::SeqCst);
                answer
            }
        });
        let serving = tokio::spawn(async move {
            let builder = http_builder(DEFAULT_HEAD_TIMEOUT);
            let _ = builder.serve_connection(TokioIo::new(io), service).await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(data).await;
            // hyper cancels a request still in progress when the input ends, so end it only
            // once the server has read everything and answered what it started; a request
            // that waits for more input (a short body) gets it ended after a bounded wait.
            let mut quiet = 0;
            for _ in 0..2_000 {
                tokio::task::yield_now().await;
                let done = consumed.load(Ordering::SeqCst) >= data.len()
                    && in_flight.load(Ordering::SeqCst) == 0;
                quiet = if done { quiet + 1 } else { 0 };
                if quiet == 3 {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let ((), out) = tokio::join!(write, read);
            out
        })
        .await;
        serving.abort();
        answer
    });
    answer.expect("the server neither answered nor closed within 10 s")
}

/// The server side of the in-memory stream, counting the bytes the server has read.
struct Counted<T> {
    inner: T,
    read: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read
            .fetch_add(buf.filled().len() - before, Ordering::SeqCst);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

//! The YourWeather demo backend: a small, fast HTTP/1.1 server that plays the weather API
//! Tollgate sits in front of in the demo, the examples and the benchmark.
//!
//! It answers the same routes with and without the `/weather` prefix (so it works whether or not
//! the gateway rewrites paths), and it deliberately behaves like a backend that needs a gateway:
//! it announces itself with fingerprinting headers (`Server`, `X-Powered-By`, `X-AspNet-Version`)
//! and reports, in `X-Backend-Saw-Key`, whether a subscription key leaked through to it.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The city used when a request names none.
pub const DEFAULT_CITY: &str = "Amsterdam";

/// The fixed body of `GET /bench`: about 100 bytes, built once.
pub const BENCH_BODY: &str = r#"{"city":"Amsterdam","temperatureC":11.4,"condition":"Light rain","source":"weather-api","ok":true}"#;

/// Longest city name echoed back; longer values are cut (the backend never trusts its input).
const MAX_CITY_CHARS: usize = 64;

const SERVER_VALUE: &str = "weather-api/1.0 (Kestrel)";
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
const X_ASPNET_VERSION: HeaderName = HeaderName::from_static("x-aspnet-version");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_BACKEND_SAW_KEY: HeaderName = HeaderName::from_static("x-backend-saw-key");

/// Request headers that carry a subscription key in the products this demo shows.
const KEY_HEADERS: [&str; 3] = [
    "x-subscription-key",
    "ocp-apim-subscription-key",
    "subscription-key",
];
/// Query parameter that carries a subscription key when a product is configured for it.
const KEY_QUERY: &str = "subscription-key";

/// Serve HTTP/1.1 with keep-alive on `listener` until the task is dropped.
///
/// Accept errors (for example running out of file descriptors under load) are reported on
/// stderr and retried after a short pause rather than ending the server.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("tollgate-demo-backend: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small responses on kept-alive connections: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                service_fn(
                    |req: Request<Incoming>| async move { Ok::<_, Infallible>(respond(&req)) },
                );
            // A client that goes away mid-request is normal; nothing to report.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Build the response for one request. Pure: depends only on the request's head.
pub fn respond<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    // The benchmark route comes first and does as little as possible.
    if path == "/bench" || path == "/weather/bench" {
        let mut resp = Response::new(Full::new(Bytes::from_static(BENCH_BODY.as_bytes())));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(SERVER, HeaderValue::from_static(SERVER_VALUE));
        return resp;
    }

    let query = req.uri().query().unwrap_or("");
    let city = query_param(query, "city")
        .map(|c| c.trim().chars().take(MAX_CITY_CHARS).collect::<String>())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| DEFAULT_CITY.to_string());

    let route = path
        .strip_prefix("/weather")
        .filter(|rest| rest.starts_with('/'));
    let (status, body) = match route.unwrap_or(path) {
        "/current" => (StatusCode::OK, current(&city)),
        "/forecast/week" => (StatusCode::OK, forecast(&city, 7)),
        "/forecast/month" => (StatusCode::OK, forecast(&city, 30)),
        "/air-quality" => (StatusCode::OK, air_quality(&city)),
        "/uv-index" => (StatusCode::OK, uv_index(&city)),
        "/healthz" => (StatusCode::OK, json!({"status": "ok"})),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "message": "no such weather endpoint"}),
        ),
    };

    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *resp.status_mut() = status;
    let saw_key = saw_key(req.headers(), query);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(SERVER, HeaderValue::from_static(SERVER_VALUE));
    headers.insert(X_POWERED_BY, HeaderValue::from_static("ASP.NET"));
    headers.insert(X_ASPNET_VERSION, HeaderValue::from_static("4.0.30319"));
    headers.insert(
        X_BACKEND_SAW_KEY,
        HeaderValue::from_static(if saw_key { "yes" } else { "no" }),
    );
    if let Some(id) = req.headers().get(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, id.clone());
    }
    resp
}

/// Whether any subscription key reached the backend, in a header or the query string.
fn saw_key(headers: &HeaderMap, query: &str) -> bool {
    KEY_HEADERS.iter().any(|h| headers.contains_key(*h)) || query_param(query, KEY_QUERY).is_some()
}

/// The first value of `name` in a URL query string, percent-decoded (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decode `%XX` escapes and `+`; malformed escapes are kept as they are, bad UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A small number derived from the city name, so different cities get different weather.
fn city_seed(city: &str) -> u32 {
    city.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    })
}

const CONDITIONS: [&str; 6] = [
    "Sunny",
    "Partly cloudy",
    "Cloudy",
    "Light rain",
    "Showers",
    "Windy",
];

fn current(city: &str) -> Value {
    let s = city_seed(city);
    let temp = 4.0 + f64::from(s % 200) / 10.0;
    json!({
        "city": city,
        "observedAt": "2025-06-01T12:00:00Z",
        "temperatureC": temp,
        "feelsLikeC": temp - 1.5,
        "condition": CONDITIONS[(s % 6) as usize],
        "humidityPercent": 55 + s % 40,
        "windKph": 5 + s % 30,
        "source": "weather-api",
    })
}

fn forecast(city: &str, days: u32) -> Value {
    let s = city_seed(city);
    let entries: Vec<Value> = (0..days)
        .map(|d| {
            let v = s.wrapping_add(d.wrapping_mul(2654435761));
            let min = f64::from(v % 120) / 10.0;
            json!({
                "date": format!("2025-06-{:02}", d + 1),
                "minC": min,
                "maxC": min + 4.0 + f64::from(v % 60) / 10.0,
                "condition": CONDITIONS[(v % 6) as usize],
                "precipitationMm": f64::from(v % 80) / 10.0,
            })
        })
        .collect();
    json!({"city": city, "days": days, "forecast": entries})
}

fn air_quality(city: &str) -> Value {
    let s = city_seed(city);
    let aqi = 15 + s % 90;
    let category = match aqi {
        0..=50 => "Good",
        51..=100 => "Moderate",
        _ => "Unhealthy for sensitive groups",
    };
    json!({
        "city": city,
        "aqi": aqi,
        "category": category,
        "pm25": f64::from(s % 350) / 10.0,
        "pm10": f64::from(s % 600) / 10.0,
        "o3": 20 + s % 80,
    })
}

fn uv_index(city: &str) -> Value {
    let uv = city_seed(city) % 11;
    let risk = match uv {
        0..=2 => "Low",
        3..=5 => "Moderate",
        6..=7 => "High",
        _ => "Very high",
    };
    json!({"city": city, "uvIndex": uv, "risk": risk})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Response<Full<Bytes>> {
        let req = Request::builder().uri(uri).body(()).unwrap_or_default();
        respond(&req)
    }

    #[test]
    fn routes_answer_with_and_without_prefix() {
        for p in [
            "/current",
            "/forecast/week",
            "/forecast/month",
            "/air-quality",
            "/uv-index",
        ] {
            assert_eq!(get(p).status(), StatusCode::OK, "{p}");
            assert_eq!(get(&format!("/weather{p}")).status(), StatusCode::OK, "{p}");
        }
        assert_eq!(get("/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/weathercurrent").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            query_param("city=New+York", "city").as_deref(),
            Some("New York")
        );
        assert_eq!(
            query_param("a=1&city=K%C3%B6ln", "city").as_deref(),
            Some("Köln")
        );
        assert_eq!(query_param("city=%zz%", "city").as_deref(), Some("%zz%"));
        assert_eq!(query_param("city=%4", "city").as_deref(), Some("%4"));
        assert_eq!(
            query_param("subscription-key", KEY_QUERY).as_deref(),
            Some("")
        );
        assert_eq!(query_param("", "city"), None);
    }

    #[test]
    fn bench_body_is_about_100_bytes() {
        assert!(
            (90..=110).contains(&BENCH_BODY.len()),
            "{}",
            BENCH_BODY.len()
        );
    }
}

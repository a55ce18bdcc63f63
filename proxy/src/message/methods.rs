//! Methods as bits: a route's allowed methods are a `u8` mask, so matching a method is one AND
//! and the `Allow` header is rebuilt from the mask without the route's names.

use http::header::HeaderValue;

/// The bit for `method` in `RouteRt::methods`; methods a route cannot list get bit 7.
pub fn method_bit(method: &http::Method) -> u8 {
    match *method {
        http::Method::GET => 1,
        http::Method::HEAD => 1 << 1,
        http::Method::POST => 1 << 2,
        http::Method::PUT => 1 << 3,
        http::Method::PATCH => 1 << 4,
        http::Method::DELETE => 1 << 5,
        http::Method::OPTIONS => 1 << 6,
        _ => 1 << 7,
    }
}

/// The `Allow` value for a method bit set, in a fixed order.
pub fn allow_value(mask: u8) -> HeaderValue {
    const ORDER: [(u8, &str); 7] = [
        (1, "GET"),
        (1 << 1, "HEAD"),
        (1 << 2, "POST"),
        (1 << 3, "PUT"),
        (1 << 4, "PATCH"),
        (1 << 5, "DELETE"),
        (1 << 6, "OPTIONS"),
    ];
    let names: Vec<&str> = ORDER
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

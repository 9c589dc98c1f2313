//! API Gateway HTTP API, payload format 2.0: the request event and the
//! function-result-to-response mapping.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// What the webhook handler knows about one request.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub protocol: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: Option<IpAddr>,
    pub request_id: &'a str,
    pub received_at: DateTime<Utc>,
}

/// The event Lambda receives from an HTTP API route. It borrows from the
/// request and serializes straight to JSON: no intermediate JSON tree on the
/// webhook's hot path.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    version: &'static str,
    route_key: String,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    #[serde(serialize_with = "pairs_as_map")]
    headers: Vec<(&'a str, Cow<'a, str>)>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "pairs_as_map")]
    query_string_parameters: Vec<(String, String)>,
    request_context: RequestContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    account_id: &'static str,
    api_id: &'static str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpContext<'a>,
    request_id: &'a str,
    route_key: String,
    stage: &'static str,
    time: String,
    time_epoch: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpContext<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    source_ip: String,
    user_agent: &'a str,
}

fn pairs_as_map<S: serde::Serializer, K: Serialize, V: Serialize>(pairs: &[(K, V)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl Event<'_> {
    pub fn to_json(&self) -> Bytes {
        // Sized for the whole event up front (headers, the body with room for
        // escapes): grown as it is written, the buffer of a typical event of
        // a kilobyte or two would be reallocated and copied several times.
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        let body = self.body.as_ref().map_or(0, |b| b.len() + b.len() / 8);
        let mut out = Vec::with_capacity(512 + headers + body);
        serde_json::to_writer(&mut out, self).expect("an event always serializes");
        Bytes::from(out)
    }
}

/// Builds the event Lambda receives from an HTTP API route.
pub fn event<'a>(req: &Request<'a>) -> Event<'a> {
    let mut headers = Vec::with_capacity(req.headers.keys_len());
    let mut cookies = Vec::new();
    for name in req.headers.keys() {
        if name == http::header::COOKIE {
            // HTTP API moves cookies out of the headers into their own list.
            let values = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
            cookies.extend(values.flat_map(|v| v.split(';')).map(str::trim).filter(|c| !c.is_empty()));
            continue;
        }
        // A value with bytes beyond ASCII (UTF-8 text, `X-Title: café`) is
        // passed on as text, invalid sequences replaced, not dropped.
        let mut values = req.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()));
        // Header names arrive lower-cased from `http`; repeated headers are
        // joined with commas, as HTTP API does.
        let first = values.next().unwrap_or_default();
        let value = match values.next() {
            None => first,
            Some(second) => {
                let mut joined = format!("{first},{second}");
                values.for_each(|v| {
                    joined.push(',');
                    joined.push_str(&v);
                });
                Cow::Owned(joined)
            }
        };
        headers.push((name.as_str(), value));
    }
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("localhost");
    // API Gateway's domainName is the host without a port.
    let domain = match host.rsplit_once(':') {
        // `name:port` or `[v6]:port`; a bare IPv6 address has colons but no port.
        Some((name, port))
            if !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    };
    let domain_prefix = domain.split('.').next().unwrap_or_default();
    let (body, is_base64_encoded) = match std::str::from_utf8(req.body) {
        _ if req.body.is_empty() => (None, false),
        Ok(text) => (Some(Cow::Borrowed(text)), false),
        Err(_) => (Some(Cow::Owned(BASE64.encode(req.body))), true),
    };
    let route_key = [req.method, " ", req.path].concat();
    Event {
        version: "2.0",
        route_key: route_key.clone(),
        raw_path: req.path,
        raw_query_string: req.query.unwrap_or(""),
        cookies,
        headers,
        query_string_parameters: req.query.map(query_parameters).unwrap_or_default(),
        request_context: RequestContext {
            account_id: "000000000000",
            api_id: "switchyard",
            domain_name: domain,
            domain_prefix,
            http: HttpContext {
                method: req.method,
                path: req.path,
                protocol: req.protocol,
                source_ip: req.source_ip.map(ip_text).unwrap_or_default(),
                user_agent: header("user-agent").unwrap_or(""),
            },
            request_id: req.request_id,
            route_key,
            stage: "$default",
            time: clf_time(req.received_at),
            time_epoch: req.received_at.timestamp_millis(),
        },
        body,
        is_base64_encoded,
    }
}

/// `04/Mar/2020:19:03:58 +0000`, API Gateway's request time (the common log
/// format), written digit by digit rather than through `format!`'s
/// machinery: it is built for every webhook request.
fn clf_time(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let Ok(year @ 0..=9999) = u32::try_from(t.year()) else {
        return t.format("%d/%b/%Y:%H:%M:%S +0000").to_string();
    };
    let mut out = String::with_capacity(26);
    push_digits(&mut out, t.day(), 2);
    out.push('/');
    out.push_str(MONTHS[t.month0() as usize]);
    out.push('/');
    push_digits(&mut out, year, 4);
    for n in [t.hour(), t.minute(), t.second()] {
        out.push(':');
        push_digits(&mut out, n, 2);
    }
    out.push_str(" +0000");
    out
}

/// `n` in decimal, zero-padded to `width` digits (`n` has no more).
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

/// An address as text; IPv4, the common case, without `Display`'s padding
/// machinery.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let width = match octet {
            0..=9 => 1,
            10..=99 => 2,
            _ => 3,
        };
        push_digits(&mut out, u32::from(octet), width);
    }
    out
}

/// `a=1&a=2&b=x%20y` -> `{"a": "1,2", "b": "x y"}`, as HTTP API decodes them.
fn query_parameters(query: &str) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        match params.iter_mut().find(|(name, _)| *name == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => params.push((k, v)),
        }
    }
    params
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
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
    (b as char).to_digit(16).map(|d| d as u8)
}

/// An HTTP response derived from a function's result.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Maps a function result to a response as HTTP API does for format 2.0: an
/// object with `statusCode` is a proxy response (`headers`, `cookies`, `body`,
/// `isBase64Encoded`); any other JSON is a 200 with that JSON as the body.
/// A result that is not JSON is passed through as a 200 `text/plain` body.
pub fn response(result: &[u8]) -> Result<Response, String> {
    let value: Value = match serde_json::from_slice(result) {
        Ok(v) => v,
        Err(_) => {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            return Ok(Response { status: StatusCode::OK, headers, body: Bytes::copy_from_slice(result) });
        }
    };
    let Some(status) = value.get("statusCode") else {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(Response { status: StatusCode::OK, headers, body: Bytes::copy_from_slice(result) });
    };
    let status = status
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("statusCode: expected an HTTP status number, got {status}"))?;
    let mut headers = HeaderMap::new();
    if let Some(map) = value.get("headers").and_then(Value::as_object) {
        for (name, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: invalid header name {name:?}"))?;
            // The server frames the body itself: a length or an encoding the
            // function names could contradict it and hang the client.
            if [http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::CONNECTION].contains(&name)
            {
                continue;
            }
            let v = HeaderValue::from_bytes(text.as_bytes())
                .map_err(|_| format!("headers.{name}: invalid header value"))?;
            headers.append(name, v);
        }
    }
    if let Some(list) = value.get("cookies").and_then(Value::as_array) {
        for cookie in list.iter().filter_map(Value::as_str) {
            let v = HeaderValue::from_str(cookie).map_err(|_| "cookies: invalid cookie value".to_string())?;
            headers.append(http::header::SET_COOKIE, v);
        }
    }
    let body = match value.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if value.get("isBase64Encoded") == Some(&Value::Bool(true)) => Bytes::from(
            BASE64.decode(s).map_err(|e| format!("body: isBase64Encoded is true but body is not base64: {e}"))?,
        ),
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    Ok(Response { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8], query: Option<&'a str>) -> Request<'a> {
        Request {
            method: "POST",
            path: "/hooks/orders",
            query,
            protocol: "HTTP/1.1",
            headers,
            body,
            source_ip: Some("127.0.0.1".parse().unwrap()),
            request_id: "req-1",
            received_at: DateTime::from_timestamp(1_583_348_638, 390_000_000).unwrap(),
        }
    }

    #[test]
    fn builds_http_api_v2_event() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        headers.insert("host", HeaderValue::from_static("api.example.com:9000"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert("cookie", HeaderValue::from_static("s=1; t=2"));
        let e = serde_json::to_value(event(&request(&headers, br#"{"id":1}"#, Some("a=1&a=2&q=x%20y")))).unwrap();
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "POST /hooks/orders");
        assert_eq!(e["rawQueryString"], "a=1&a=2&q=x%20y");
        assert_eq!(e["queryStringParameters"], json!({"a": "1,2", "q": "x y"}));
        assert_eq!(e["headers"]["x-multi"], "a,b");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["domainName"], "api.example.com");
        assert_eq!(e["requestContext"]["domainPrefix"], "api");
        assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(e["requestContext"]["http"]["userAgent"], "curl/8");
        assert_eq!(e["requestContext"]["timeEpoch"], 1_583_348_638_390i64);
        assert_eq!(e["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(e["body"], r#"{"id":1}"#);
        assert_eq!(e["isBase64Encoded"], false);
    }

    #[test]
    fn header_values_beyond_ascii_are_passed_as_text() {
        let mut headers = HeaderMap::new();
        headers.insert("x-title", HeaderValue::from_bytes("café".as_bytes()).unwrap());
        headers.insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let e = serde_json::to_value(event(&request(&headers, b"{}", None))).unwrap();
        assert_eq!(e["headers"]["x-title"], "café");
        assert_eq!(e["headers"]["x-latin1"], "caf\u{fffd}", "invalid UTF-8 replaced, not dropped");
    }

    #[test]
    fn a_framing_header_from_the_function_is_left_to_the_server() {
        let r = response(
            br#"{"statusCode":200,"headers":{"content-length":"999","transfer-encoding":"chunked","connection":"close","x-a":"caf\u00e9"},"body":"hi"}"#,
        )
        .unwrap();
        assert!(r.headers.get("content-length").is_none(), "{:?}", r.headers);
        assert!(r.headers.get("transfer-encoding").is_none(), "{:?}", r.headers);
        assert!(r.headers.get("connection").is_none(), "{:?}", r.headers);
        assert_eq!(r.headers["x-a"].as_bytes(), "café".as_bytes());
        assert_eq!(r.body, "hi");
    }

    #[test]
    fn time_and_address_are_written_as_formatting_would() {
        for seconds in [0, 1_583_348_638, 1_767_582_245, 1_798_761_599, 4_102_444_800] {
            let t = DateTime::from_timestamp(seconds, 0).unwrap();
            assert_eq!(clf_time(t), t.format("%d/%b/%Y:%H:%M:%S +0000").to_string());
        }
        for ip in ["0.0.0.0", "10.0.255.7", "192.168.1.100", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn binary_body_is_base64() {
        let headers = HeaderMap::new();
        let e = serde_json::to_value(event(&request(&headers, &[0xff, 0x00, 0x10], None))).unwrap();
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "/wAQ");
        assert!(e.get("queryStringParameters").is_none());
    }

    #[test]
    fn proxy_result_becomes_response() {
        let r = response(br#"{"statusCode":201,"headers":{"x-a":"1"},"cookies":["c=1"],"body":"made"}"#).unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["x-a"], "1");
        assert_eq!(r.headers["set-cookie"], "c=1");
        assert_eq!(r.body, "made");
        let r = response(br#"{"statusCode":200,"isBase64Encoded":true,"body":"/wAQ"}"#).unwrap();
        assert_eq!(&r.body[..], &[0xff, 0x00, 0x10]);
    }

    #[test]
    fn plain_json_result_is_a_200_json_body() {
        let r = response(br#"{"ok":true}"#).unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body, r#"{"ok":true}"#);
    }

    #[test]
    fn bad_status_code_is_an_error() {
        let err = response(br#"{"statusCode":"abc"}"#).unwrap_err();
        assert!(err.contains("statusCode"), "{err}");
    }
}

//! API Gateway HTTP API, payload format 2.0: the request event and the
//! function-result-to-response mapping.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

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

/// Builds the event Lambda receives from an HTTP API route.
pub fn event(req: &Request<'_>) -> Value {
    let route_key = format!("{} {}", req.method, req.path);
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in req.headers.keys() {
        let values: Vec<&str> = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if name == http::header::COOKIE {
            // HTTP API moves cookies out of the headers into their own list.
            cookies.extend(values.iter().flat_map(|v| v.split(';')).map(|c| c.trim().to_string()));
            continue;
        }
        // Header names arrive lower-cased from `http`; repeated headers are
        // joined with commas, as HTTP API does.
        headers.insert(name.as_str().to_string(), Value::String(values.join(",")));
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
            name.to_string()
        }
        _ => host.to_string(),
    };
    let domain_prefix = domain.split('.').next().unwrap_or_default().to_string();

    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": req.path,
        "rawQueryString": req.query.unwrap_or(""),
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "switchyard",
            "domainName": domain,
            "domainPrefix": domain_prefix,
            "http": {
                "method": req.method,
                "path": req.path,
                "protocol": req.protocol,
                "sourceIp": req.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "userAgent": header("user-agent").unwrap_or(""),
            },
            "requestId": req.request_id,
            "routeKey": format!("{} {}", req.method, req.path),
            "stage": "$default",
            "time": req.received_at.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": req.received_at.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    let obj = event.as_object_mut().expect("built as an object");
    if !cookies.is_empty() {
        obj.insert("cookies".into(), json!(cookies));
    }
    if let Some(params) = req.query.filter(|q| !q.is_empty()).map(query_parameters) {
        obj.insert("queryStringParameters".into(), Value::Object(params));
    }
    if !req.body.is_empty() {
        match std::str::from_utf8(req.body) {
            Ok(text) => {
                obj.insert("body".into(), Value::String(text.to_string()));
            }
            Err(_) => {
                obj.insert("body".into(), Value::String(BASE64.encode(req.body)));
                obj.insert("isBase64Encoded".into(), Value::Bool(true));
            }
        }
    }
    event
}

/// `a=1&a=2&b=x%20y` -> `{"a": "1,2", "b": "x y"}`, as HTTP API decodes them.
fn query_parameters(query: &str) -> Map<String, Value> {
    let mut params: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        match params.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                params.insert(k, Value::String(v));
            }
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
            let v = HeaderValue::from_str(&text).map_err(|_| format!("headers.{name}: invalid header value"))?;
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
        let e = event(&request(&headers, br#"{"id":1}"#, Some("a=1&a=2&q=x%20y")));
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
    fn binary_body_is_base64() {
        let headers = HeaderMap::new();
        let e = event(&request(&headers, &[0xff, 0x00, 0x10], None));
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

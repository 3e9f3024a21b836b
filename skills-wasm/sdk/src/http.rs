//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! Every request goes through the host's egress hook; a request no grant
//! covers comes back as `Error::Denied`, which the skill can report.

use crate::Error;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

pub fn get(url: &str) -> Result<Response, Error> {
    request("GET", url, &[], None)
}

/// Send a request and read the whole response body (the host caps its size).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response, Error> {
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| Error::InvalidInput(format!("not an absolute URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (k, v) in headers {
        fields.append(k, v.as_bytes()).map_err(|e| Error::InvalidInput(format!("header {k}: {e:?}")))?;
    }
    let req = OutgoingRequest::new(fields);
    let method_name = method.to_ascii_uppercase();
    let method = match method_name.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.into()),
    };
    let bad = |what: &str| Error::InvalidInput(format!("{what} rejected in {url}"));
    req.set_method(&method).map_err(|_| bad("method"))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.into()),
    };
    req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
    req.set_authority(Some(authority)).map_err(|_| bad("authority"))?;
    req.set_path_with_query(Some(path)).map_err(|_| bad("path"))?;

    let describe = |code: ErrorCode| match code {
        ErrorCode::HttpRequestDenied => Error::Denied(format!(
            "http {method_name} {url}: the host denied this request (no grant covers it, or too many are open; `wasiclaw audit` says which)"
        )),
        other => Error::Failed(format!("http {method_name} {url}: {other:?}")),
    };
    // The body must be streamed after `handle`: the host buffers only a
    // chunk or so before the request is on its way.
    let out = req.body().map_err(|_| Error::Failed("request body taken twice".into()))?;
    let pending = outgoing_handler::handle(req, None).map_err(describe)?;
    let mut write_error = None;
    if let Some(body) = body {
        let stream = out.write().map_err(|_| Error::Failed("request body stream".into()))?;
        for chunk in body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(e);
                break;
            }
        }
    }
    // When the host stopped reading the body, its reason (a size cap, a
    // denial) arrives as the response's error: report that one.
    match write_error {
        None => OutgoingBody::finish(out, None).map_err(describe)?,
        Some(_) => drop(out),
    }
    pending.subscribe().block();
    let resp = pending
        .get()
        .ok_or_else(|| Error::Failed("response not ready".into()))?
        .map_err(|_| Error::Failed("response taken twice".into()))?
        .map_err(describe)?;
    if let Some(e) = write_error {
        return Err(Error::Failed(format!("http {method_name} {url}: writing the request body: {e:?}")));
    }

    let status = resp.status();
    let headers = resp.headers().entries();
    let incoming = resp.consume().map_err(|_| Error::Failed("response body taken".into()))?;
    let stream = incoming.stream().map_err(|_| Error::Failed("response stream taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Failed(format!("reading response of {url}: {}", e.to_debug_string())));
            }
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    Ok(Response { status, headers, body })
}

/// Percent-encode a query or path component (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

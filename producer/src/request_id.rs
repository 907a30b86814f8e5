//! The request id: the client's (or the load balancer's) `X-Request-Id` when it
//! is well formed, a fresh UUID otherwise. It is echoed in the answer, is a
//! field of every log line's span, and travels with the order as the
//! `request_id` message attribute, so one order can be followed from the HTTP
//! request to its row.

use axum::extract::Request;
use axum::http::HeaderName;

/// The header that carries it, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// 1–128 characters of `A-Z a-z 0-9 - _ . :` (UUIDs, ULIDs, trace ids): safe
/// in logs, headers and a database column without escaping.
pub fn is_well_formed(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops an `X-Request-Id` that is not well formed (or is sent more than once),
/// so that the next layer generates one.
pub(crate) fn drop_malformed(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(&REQUEST_ID_HEADER).iter();
    let keep = match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().is_ok_and(is_well_formed),
        _ => false,
    };
    if !keep && headers.remove(&REQUEST_ID_HEADER).is_some() {
        tracing::debug!("replacing a malformed X-Request-Id");
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn uuids_and_trace_ids_are_well_formed() {
        for id in [
            "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10",
            "01HZY3K8M4Q",
            "Root=1-67891233-abcdef012345678912345678"
                .replace('=', ":")
                .as_str(),
            "a",
            &"x".repeat(128),
        ] {
            assert!(is_well_formed(id), "{id}");
        }
    }

    #[test]
    fn empty_long_or_odd_ids_are_not() {
        for id in [
            "",
            &"x".repeat(129),
            "with space",
            "new\nline",
            "quote\"",
            "semi;colon",
            "ünï",
        ] {
            assert!(!is_well_formed(id), "{id:?}");
        }
    }

    fn with_ids(ids: &[&[u8]]) -> Request {
        let mut request = Request::get("/").body(Body::empty()).expect("request");
        for id in ids {
            request.headers_mut().append(
                REQUEST_ID_HEADER,
                axum::http::HeaderValue::from_bytes(id).expect("header value"),
            );
        }
        request
    }

    #[test]
    fn a_well_formed_id_is_kept_and_others_are_dropped() {
        let kept = drop_malformed(with_ids(&[b"abc-123"]));
        assert_eq!(kept.headers()[REQUEST_ID_HEADER], "abc-123");
        for ids in [&[b"has space".as_slice()][..], &[b"a", b"b"], &[b"\xff"]] {
            let dropped = drop_malformed(with_ids(ids));
            assert!(
                !dropped.headers().contains_key(REQUEST_ID_HEADER),
                "{ids:?}"
            );
        }
    }
}

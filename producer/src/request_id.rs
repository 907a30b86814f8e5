//! The request id: `X-Request-Id` when well formed by [`RequestId`]'s rule, a
//! fresh UUID otherwise (`tower_http`'s layers, in `router`).

use axum::extract::Request;
use axum::http::HeaderName;
use order_contract::RequestId;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Drops an `X-Request-Id` that is not well formed (or is sent more than once),
/// so that the next layer generates one.
pub(crate) fn drop_malformed(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(&REQUEST_ID_HEADER).iter();
    let keep = match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().is_ok_and(RequestId::is_well_formed),
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

//! The customer's order page at `GET /`, with its stylesheet, script and icon.
//!
//! The files are embedded in the binary, so the page deploys with the producer
//! and needs no build step. The page is an ordinary client of `POST /orders`:
//! it gets no special treatment from the API.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Only the page's own files, and requests to its own origin: no inline script
/// or style, no third party, no framing (clickjacking), no `<base>` rewriting.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_CSS: &str = include_str!("page/app.css");
const APP_JS: &str = include_str!("page/app.js");
const FAVICON_SVG: &str = include_str!("page/favicon.svg");

/// Each file's path and media type.
const FILES: [(&str, &str, &str); 4] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/app.css", "text/css; charset=utf-8", APP_CSS),
    ("/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/favicon.svg", "image/svg+xml", FAVICON_SVG),
];

/// `GET /` and the files it loads; merged into the service's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { file(content_type, body) }))
        })
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            // Browsers must not guess another type (e.g. run the CSS as script).
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The names carry no version: revalidate so a deploy shows at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EnqueueError, OrderMessage, OrderQueue};
    use crate::routes::{AppState, router as service_router};
    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode};
    use std::sync::Arc;
    use std::time::Duration;
    use tower::ServiceExt;

    /// The page needs no queue; any call to it is a test failure.
    struct NoQueue;

    impl OrderQueue for NoQueue {
        async fn send(&self, _message: OrderMessage) -> Result<String, EnqueueError> {
            panic!("serving the page must not touch the queue")
        }

        async fn check(&self) -> Result<(), EnqueueError> {
            panic!("serving the page must not touch the queue")
        }
    }

    async fn get(method: &str, path: &str) -> (StatusCode, HeaderMap, String) {
        let app = service_router(AppState::new(Arc::new(NoQueue), Duration::from_secs(1)));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8(bytes.to_vec()).expect("UTF-8"),
        )
    }

    #[tokio::test]
    async fn the_service_serves_the_order_page_at_its_root_with_the_csp() {
        let (status, headers, body) = get("GET", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert!(body.contains(r#"<html lang="en">"#));
        assert!(body.contains("Place order"));
    }

    #[tokio::test]
    async fn each_file_of_the_page_has_its_own_content_type_and_the_csp() {
        for (path, content_type, body) in [
            ("/app.css", "text/css; charset=utf-8", APP_CSS),
            ("/app.js", "text/javascript; charset=utf-8", APP_JS),
            ("/favicon.svg", "image/svg+xml", FAVICON_SVG),
        ] {
            let (status, headers, served) = get("GET", path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(served, body, "{path}");
        }
    }

    #[tokio::test]
    async fn head_requests_get_the_headers_without_the_page() {
        let (status, headers, body) = get("HEAD", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body.is_empty());
    }

    #[test]
    fn the_policy_allows_only_the_pages_own_resources() {
        let directives: Vec<&str> = CONTENT_SECURITY_POLICY.split(';').map(str::trim).collect();
        assert!(directives.contains(&"default-src 'none'"));
        for directive in &directives {
            let sources = directive.split_whitespace().skip(1);
            for source in sources {
                assert!(
                    ["'self'", "'none'"].contains(&source),
                    "{directive} allows {source}"
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_third_party_resource() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "inline style attribute");
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/").count(),
            "every script is one of the page's own files"
        );
        let inline_handler = html.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!inline_handler, "inline event handler");
        for text in [INDEX_HTML, APP_CSS, APP_JS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("url("), "CSS loads nothing");
        }
        assert!(
            !APP_JS.contains("innerHTML"),
            "server text is never parsed as HTML"
        );
    }

    #[test]
    fn the_page_carries_no_sku_or_price_of_its_own_and_renders_the_catalogue() {
        for item in crate::catalogue::fixtures::catalogue().items {
            let price = format!(
                "{}.{:02}",
                item.unit_price_cents / 100,
                item.unit_price_cents % 100
            );
            for text in [INDEX_HTML, APP_JS] {
                assert!(!text.contains(&item.sku), "{} in the page", item.sku);
                assert!(!text.contains(&price), "{price} in the page");
            }
        }
        assert!(APP_JS.contains(r#"fetch("/catalogue""#));
        assert!(INDEX_HTML.contains(r#"id="item-list""#));
    }
}

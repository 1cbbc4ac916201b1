//! The web page a node serves at `/`: the live public timeline, a form to
//! post, edit and delete, and the mesh as this node sees it.
//!
//! Three static files in `node/web/` (`index.html`, `app.js`, `style.css`)
//! are compiled into the binary with `include_str!`: no build step, nothing
//! to install next to the binary, no external resource (the page's
//! Content-Security-Policy allows only this origin). The page is plain
//! JavaScript over the public API: `GET /api/v0/p` for the first screen, the
//! event stream `GET /api/v0/events` for what follows (resumed with its token
//! after a lost connection, a node restart included), `GET /api/v0/mesh`
//! every few seconds, and the write routes for the form and buttons.
//!
//! `/p/{id}` serves the same page, which then shows that one post (its
//! permalink).
//!
//! Caching: every file carries a strong `ETag` (a hash of its content) and
//! `Cache-Control: no-cache`, so browsers revalidate each load with a cheap
//! `304 Not Modified` and never run an old script against a new page after
//! an upgrade.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;

use crate::api::ApiState;

/// Route of the page.
pub const PAGE: &str = "/";
/// Route of a post's permalink page.
pub const PERMALINK: &str = "/p/{id}";
/// Route of a user's post by its slug (redirected to its id permalink).
pub const USER_PERMALINK: &str = "/p/{user}/{title}";
/// Route of the page's script and style sheet.
pub const ASSET: &str = "/web/{file}";

/// What the page may load: only this origin; no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// One embedded file and its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        let hash = sha2::Sha256::digest(body.as_bytes());
        let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value");
        Asset {
            body,
            content_type,
            etag,
        }
    }

    /// The file, or `304 Not Modified` when the client holds this version.
    fn serve(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                let ours = self.etag.to_str().unwrap_or_default();
                tags.split(',').any(|t| {
                    let t = t.trim();
                    t == "*" || t.trim_start_matches("W/") == ours
                })
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.content_type.starts_with("text/html") {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        response
    }
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../web/index.html"),
        "text/html; charset=utf-8",
    )
});
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../web/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static STYLE_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../web/style.css"), "text/css; charset=utf-8"));

/// The page's routes, merged into [`crate::api::router`].
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(PAGE, get(page))
        .route(PERMALINK, get(permalink))
        .route(USER_PERMALINK, get(crate::api::slugs::user_permalink))
        .route(ASSET, get(asset))
}

async fn page(request: HeaderMap) -> Response {
    INDEX.serve(&request)
}

/// A post's page: by id, or by an anonymous post's slug (redirected to the
/// id, which the page reads from its address).
async fn permalink(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: HeaderMap,
) -> Response {
    if id.parse::<hearsay_crdt::PostId>().is_ok() {
        return INDEX.serve(&request);
    }
    crate::api::slugs::anonymous_permalink(&state, &id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn asset(Path(file): Path<String>, request: HeaderMap) -> Response {
    match file.as_str() {
        "app.js" => APP_JS.serve(&request),
        "style.css" => STYLE_CSS.serve(&request),
        // Plain text: the API's middleware wraps it in the error envelope.
        _ => (StatusCode::NOT_FOUND, format!("no file {file:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use tokio::sync::{mpsc, watch};
    use tower::ServiceExt;

    use super::*;
    use crate::api::{NodeInfo, router};
    use crate::metrics::Metrics;

    fn app() -> Router {
        let (core, _) = mpsc::channel(1);
        let state = ApiState {
            core: core.clone(),
            registry: None,
            names: Arc::new(crate::names::MeshRegistry::new(
                core,
                Metrics::new("test", None),
            )),
            core_status: watch::channel(Default::default()).1,
            net_status: watch::channel(Default::default()).1,
            metrics: Metrics::new("test", None),
            info: Arc::new(NodeInfo {
                peer_id: "12D3KooWtest".into(),
                http: SocketAddr::from(([127, 0, 0, 1], 8080)),
                region: "test".into(),
                geo: None,
                started: Instant::now(),
            }),
            log: Arc::new(crate::store::MemoryStore::default()),
            events: Default::default(),
            admin: None,
        };
        router(state)
    }

    async fn get(path: &str, headers: &[(header::HeaderName, &str)]) -> Response {
        let mut request = Request::builder().method(Method::GET).uri(path);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn the_page_and_its_permalink_form_are_the_same_html() {
        for path in ["/", "/p/0123456789abcdef0123456789abcdef"] {
            let response = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                "text/html; charset=utf-8"
            );
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            assert!(header(&response, header::CONTENT_SECURITY_POLICY).contains("'self'"));
            let html = text(response).await;
            assert!(html.contains("/web/app.js") && html.contains("/web/style.css"));
        }
    }

    #[tokio::test]
    async fn assets_have_their_types_and_revalidate_with_their_etag() {
        for (path, content_type, body) in [
            ("/web/app.js", "text/javascript; charset=utf-8", APP_JS.body),
            ("/web/style.css", "text/css; charset=utf-8", STYLE_CSS.body),
        ] {
            let response = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, header::CONTENT_TYPE), content_type);
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let etag = header(&response, header::ETAG).to_owned();
            assert_eq!(text(response).await, body);

            let again = get(path, &[(header::IF_NONE_MATCH, &etag)]).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(header(&again, header::ETAG), etag);
            assert!(text(again).await.is_empty());

            let stale = get(path, &[(header::IF_NONE_MATCH, "\"0000\"")]).await;
            assert_eq!(stale.status(), StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_in_the_error_envelope() {
        let response = get("/web/secret.txt", &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let json: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(json["status"], "ERROR");
        assert!(json["error"].as_str().unwrap().contains("secret.txt"));
    }

    #[tokio::test]
    async fn the_mesh_route_shows_this_node() {
        let response = get("/api/v0/mesh", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(json["status"], "OK");
        let this = &json["body"]["self"];
        assert_eq!(this["peer_id"], "12D3KooWtest");
        assert_eq!(this["http"], "127.0.0.1:8080");
        assert_eq!(this["revision"], 0);
        assert!(this["token"].is_string());
        assert_eq!(json["body"]["peers"], serde_json::json!([]));
    }
}

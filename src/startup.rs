//! [`Application`]: binds, wires and serves.
//!
//! The listener and the shutdown signal are passed in, so tests bind
//! `127.0.0.1:0` and stop the server when they are done (mini-redis's
//! `server::run(listener, shutdown)`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::oidc::params::BODY_LIMIT;
use crate::state::{AppState, State};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Delivers the outbox: emails, and the writes the upstream is owed.
    outbox: Arc<crate::jobs::outbox::Worker>,
}

/// How often each instance re-reads the signing keys, so a rotation made
/// by `switchyard keys rotate` (or another instance) is picked up.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// How often expired refresh families and upstream tokens are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the Prometheus gauges (users by state, outbox, jobs) are
/// read from the database: a scrape then costs nothing.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);

/// The warning for a production deployment (an `https` issuer) whose
/// signing keys sit in the database unencrypted: anyone who can read a
/// backup or the `keys` table can then sign tokens as this issuer.
/// `SWITCHYARD_KEY_ENCRYPTION_KEY` seals them.
pub fn key_encryption_warning(settings: &Settings) -> Option<&'static str> {
    let sealed = std::env::var("SWITCHYARD_KEY_ENCRYPTION_KEY").is_ok_and(|v| !v.trim().is_empty());
    (settings.is_https() && !sealed).then_some(
        "SWITCHYARD_KEY_ENCRYPTION_KEY is not set: the signing keys are stored unencrypted in the database. Set it (32 random bytes, base64) to seal them.",
    )
}

impl Application {
    /// Binds `settings.listen` and wires the state.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Self::build_with_listener(settings, listener).await
    }

    /// Serves on a listener the caller already bound.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        if let Some(warning) = key_encryption_warning(&settings) {
            tracing::warn!("{warning}");
        }
        let state = State::build(settings).await?;
        let outbox = Arc::new(crate::jobs::outbox::Worker::new(&state)?);
        Ok(Self {
            listener,
            state,
            outbox,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reload_state = self.state.clone();
        let reloader = tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = reload_state.keys.reload().await {
                    tracing::warn!(error = %e, "reloading signing keys failed; keeping the current set");
                }
            }
        });
        let purge_state = self.state.clone();
        let purger = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_INTERVAL);
            loop {
                tick.tick().await;
                match purge_state.db.purge_expired(crate::store::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        rows = n,
                        "purged expired refresh families and upstream tokens"
                    ),
                    Err(e) => tracing::warn!(error = %e, "purging expired refresh families failed"),
                }
            }
        });
        let gauge_state = self.state.clone();
        let gauges = tokio::spawn(async move {
            let mut tick = tokio::time::interval(GAUGE_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = crate::admin::migration::refresh_gauges(&gauge_state).await {
                    tracing::warn!(error = %e, "refreshing the gauges failed");
                }
            }
        });
        // The outbox is delivered beside the requests, never in them: a
        // login only inserts its row.
        let outbox = tokio::spawn(self.outbox.run());
        // Jobs queued from the admin API run beside the requests too.
        let jobs = self.state.settings.admin.run_jobs.then(|| {
            let worker = crate::jobs::server::Worker::new(
                self.state.db.clone(),
                self.state.settings.clone(),
            );
            tokio::spawn(worker.run())
        });
        let app = router(self.state);
        let result = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        reloader.abort();
        purger.abort();
        gauges.abort();
        // A delivery cut short keeps its claim until the lease ends, then
        // any instance sends it again (the write is idempotent).
        outbox.abort();
        // A job cut short keeps its chunks' claims until they go stale,
        // then another instance (or `--resume`) continues it.
        if let Some(jobs) = jobs {
            jobs.abort();
        }
        result
    }
}

/// Every route, with the layers every route shares.
pub fn router(state: AppState) -> Router {
    // OIDC Discovery §4: metadata lives at `{issuer}/.well-known/…`, so an
    // issuer with a path (`…/oauth2/default`, `…/realms/acme`) gets the
    // protocol endpoints and the vendor aliases under that path too.
    let issuer_path = url::Url::parse(&state.settings.issuer)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let protocol = if issuer_path.is_empty() {
        crate::oidc::vendor_aliases()
    } else {
        // The login pages too: the upstream returns the browser to
        // `{issuer}/login/callback`, and an issuer with a path is what
        // Okta's SDKs are configured with.
        Router::new().nest(
            &issuer_path,
            crate::oidc::router()
                .merge(crate::oidc::vendor_aliases())
                .merge(crate::login::router()),
        )
    };
    Router::new()
        .merge(crate::oidc::router())
        .merge(crate::login::router())
        .merge(crate::admin::router())
        .merge(crate::api_v2::router(&state))
        .merge(protocol)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(axum::middleware::map_response(deny_framing))
        .layer(
            // The span names the path only: query strings carry codes,
            // states and hints that have no place in a log line.
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let request_id = req
                    .headers()
                    .get(X_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
            }),
        )
        // Outside the trace layer, so its span already sees the id.
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// The header a request's id travels in, both ways: a proxy or client in
/// front may send one so its logs and ours share it (the de facto header,
/// as nginx's `$request_id` and Heroku's router set it); Switchyard echoes
/// it, or the one it made, in the response.
pub const X_REQUEST_ID: &str = "x-request-id";

/// Whether a request id sent by a client is taken as it is: at most 64
/// characters of `[A-Za-z0-9._-]`, so it cannot forge a log line, carry
/// a token's worth of data, or break a header.
pub fn sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Gives every request an id (the client's when it is sane, else a new
/// random one) that the request span logs and the response echoes in
/// `X-Request-Id`.
async fn request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let sent = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| sane_request_id(id));
    let id = match sent {
        Some(id) => HeaderValue::from_str(id).ok(),
        None => None,
    }
    .unwrap_or_else(|| {
        // 16 random bytes, base64url: unguessable and in the sane alphabet.
        let id = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            crate::crypto::random_bytes(16),
        );
        HeaderValue::from_str(&id).expect("base64url is a valid header value")
    });
    request.headers_mut().insert(X_REQUEST_ID, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// `X-Frame-Options: DENY` on every response that does not say itself
/// whether it may be framed: a page's `Content-Security-Policy` carries its
/// own `frame-ancestors` (src/templates.rs), which browsers obey over this
/// header (CSP Level 3 §6.4.2), and one page (a `web_message` response)
/// must be framable by exactly one application.
async fn deny_framing(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY)
        && !headers.contains_key(header::X_FRAME_OPTIONS)
    {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

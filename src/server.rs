//! The health and metrics server (`[server] listen`): `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! - `/healthz`: 200 `ok` while the process serves requests (liveness).
//! - `/readyz`: 200 `ready`, or 503 with the reasons one per line (see [`Health::readiness`]).
//! - `/metrics`: the Prometheus text exposition of [`crate::metrics`].
//!
//! Any other path is a 404; another method on these paths a 405. `HEAD` works where `GET` does.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::Health;

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// The routes, for [`serve`] and for tests.
pub fn router(health: Arc<Health>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .with_state(Shared { health, metrics })
}

/// Serves the routes on `listener` until `shutdown` completes (then lets open requests finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics)).with_graceful_shutdown(shutdown).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Shared>) -> Response {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => {
            let mut body = why.join("\n");
            body.push('\n');
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

async fn render_metrics(State(s): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], s.metrics.render()).into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    struct Running {
        base: String,
        health: Arc<Health>,
        http: reqwest::Client,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    const INTERVAL: Duration = Duration::from_secs(10);

    async fn start() -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let health = Arc::new(Health::new(INTERVAL));
        let handle = crate::metrics::install().expect("metrics");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, health.clone(), handle, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        Running { base, health, http, stop: Some(tx), task }
    }

    impl Running {
        async fn get(&self, path: &str) -> (u16, String, String) {
            let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("request");
            let status = r.status().as_u16();
            let ctype =
                r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            (status, ctype, r.text().await.expect("body"))
        }

        async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            let ended = tokio::time::timeout(Duration::from_secs(5), self.task).await;
            assert!(matches!(ended, Ok(Ok(Ok(())))), "server did not stop cleanly: {ended:?}");
        }
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let s = start().await;
        assert_eq!(s.get("/healthz").await, (200, "text/plain; charset=utf-8".into(), "ok\n".into()));
        s.stop().await;
    }

    #[tokio::test]
    async fn readyz_follows_the_polls() {
        let s = start().await;
        s.health.set_ledger_open(true);
        s.health.set_tables_loaded(true);
        let (status, _, body) = s.get("/readyz").await;
        assert_eq!((status, body.as_str()), (503, "no successful poll yet\n"));

        s.health.poll_succeeded();
        let (status, _, body) = s.get("/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));

        // The last success four intervals ago: stale.
        let long_ago = Instant::now().checked_sub(INTERVAL * 4).expect("the clock runs longer than 40 s");
        s.health.poll_succeeded_at(long_ago);
        s.health.poll_failed("list alerts: status 503");
        let (status, _, body) = s.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2, "{body}");
        assert!(lines[0].starts_with("last successful poll 40s ago"), "{body}");
        assert_eq!(lines[1], "last poll error: list alerts: status 503");
        s.stop().await;
    }

    #[tokio::test]
    async fn metrics_are_rendered_for_prometheus() {
        let s = start().await;
        crate::metrics::record_one_of_each();
        let (status, ctype, body) = s.get("/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(ctype, METRICS_CONTENT_TYPE);
        for name in crate::metrics::ALL {
            assert!(body.contains(&format!("# HELP {name} ")), "no {name} in:\n{body}");
        }
        assert!(body.contains("\npanther_triage_comments_posted_total "), "{body}");
        s.stop().await;
    }

    #[tokio::test]
    async fn other_paths_are_not_found() {
        let s = start().await;
        assert_eq!(s.get("/").await.0, 404);
        assert_eq!(s.get("/metrics/x").await.0, 404);
        let r = s.http.post(format!("{}/healthz", s.base)).send().await.expect("request");
        assert_eq!(r.status().as_u16(), 405);
        s.stop().await;
    }
}

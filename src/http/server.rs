//! The routes. Read-only ones need nothing; `POST /api/command` needs the token.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the operator page |
//! | `GET /api/status` | the MQTT stats message plus the node, readiness and the view's latest shots |
//! | `GET /api/events` | the same as server-sent events (`status`), a few times a second |
//! | `GET /api/live/{camera}` | the camera's latest judged frame with its overlay (JPEG) |
//! | `GET /api/rejects` | the last NG, UNCERTAIN and ERROR parts (JSON) |
//! | `GET /api/rejects/{seq}` | one of them as JPEG with its overlay |
//! | `GET /api/captured/{key}` | a part kept by evidence capture (gallery of a capturing task) as JPEG with its overlay |
//! | `POST /api/mark` | a review mark on a captured part, `{"task", "part_id", "mark", "by"}` (token) |
//! | `POST /api/command` | a command, the same JSON as on MQTT (token) |
//! | `GET /api/alarms` | past and present alarms: start, end, who acknowledged |
//! | `POST /api/alarms/{id}/ack` | acknowledge one, `{"by": "name"}` (token) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once inspecting with no active fault, else 503 with the reasons |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::auth::Auth;
use super::{metrics, render};
use crate::part::view::{Shot, Stored, StoredShot, Views};
use crate::stats::NodeStats;
use crate::telemetry::commands::{parse_json, Commander, MAX_COMMAND_BYTES};
use crate::telemetry::guard::{CommandId, Origin};

const PAGE: &str = include_str!("page.html");

/// Set once the node inspects (READY sent to systemd).
pub type Ready = Arc<AtomicBool>;

/// A running server: where it listens, and its task (aborted at stop).
pub struct Served {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// What the handlers read. One per server.
struct Shared {
    node: String,
    stats: Arc<NodeStats>,
    views: Arc<Views>,
    /// Evidence capture: the gallery of a capturing task comes from its store.
    stored: Option<Arc<dyn Stored>>,
    commander: Commander,
    auth: Auth,
    ready: Ready,
    /// How often the events stream sends the status.
    tick: Duration,
    drawer: render::Drawer,
    /// The last JPEG made of each shot asked for, by `seq`: viewers watching the same camera
    /// share one encoding.
    jpegs: Mutex<BTreeMap<u64, Arc<Vec<u8>>>>,
}

/// JPEGs kept for viewers: every camera's latest and a few gallery pictures.
const JPEG_CACHE: usize = 32;

/// What the page serves, as `app` wires it.
pub struct Page {
    pub listen: SocketAddr,
    /// HTTPS with this server config; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `group/node`, shown in the page's title bar.
    pub node: String,
    pub live_fps: f64,
    pub stats: Arc<NodeStats>,
    pub views: Arc<Views>,
    /// Evidence capture's store, when a task captures.
    pub stored: Option<Arc<dyn Stored>>,
    pub commander: Commander,
    pub auth: Auth,
    pub ready: Ready,
}

/// Bind `page.listen` and serve until the task is aborted.
pub async fn serve(page: Page) -> Result<Served, String> {
    let Page { listen, tls, node, live_fps, stats, views, stored, commander, auth, ready } = page;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        format!(
            "http.listen {listen} cannot be bound: {e} — another process may hold the port (`ss -ltnp 'sport = :{}'`); choose another `http.listen`",
            listen.port()
        )
    })?;
    let addr = listener.local_addr().map_err(|e| format!("http.listen {listen}: {e}"))?;
    let drawer = render::Drawer::start().map_err(|e| format!("cannot start the page's drawing thread: {e}"))?;
    let shared = Arc::new(Shared {
        node,
        stats,
        views,
        stored,
        commander,
        auth,
        ready,
        drawer,
        tick: Duration::from_secs_f64((1.0 / live_fps).clamp(0.1, 1.0)),
        jpegs: Mutex::new(BTreeMap::new()),
    });
    let app = Router::new()
        .route("/", get(operator_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/live/{camera}", get(live))
        .route("/api/rejects", get(rejects))
        .route("/api/rejects/{seq}", get(reject_image))
        .route("/api/captured/{key}", get(captured_image))
        .route("/api/mark", post(mark))
        .route("/api/command", post(command))
        .route("/api/alarms", get(alarms))
        .route("/api/alarms/{id}/ack", post(acknowledge))
        .layer(DefaultBodyLimit::max(MAX_COMMAND_BYTES))
        .with_state(shared);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let task = match tls {
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(%addr, error = %e, "the operator page's server stopped; inspection goes on");
            }
        }),
        Some(config) => {
            let tls =
                super::tls::TlsListener::new(listener, config).map_err(|e| format!("http.listen {listen}: {e}"))?;
            // `tap_io` only so that axum can tell the peer's address (ConnectInfo) of any listener.
            let tls = axum::serve::ListenerExt::tap_io(tls, |_| {});
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tls, service).await {
                    tracing::error!(%addr, error = %e, "the operator page's server stopped; inspection goes on");
                }
            })
        }
    };
    tracing::info!(%addr, "operator page at {scheme}://{addr}/ (metrics at /metrics)");
    Ok(Served { addr, task })
}

async fn operator_page() -> Html<&'static str> {
    Html(PAGE)
}

/// Why the node is not ready, if it is not.
fn not_ready(s: &Shared) -> Vec<String> {
    let mut reasons = Vec::new();
    if !s.ready.load(Ordering::Relaxed) {
        reasons.push("starting: not inspecting yet".to_string());
    }
    reasons.extend(s.stats.faults.list());
    reasons
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let reasons = not_ready(&s);
    let code = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"ready": reasons.is_empty(), "reasons": reasons}))).into_response()
}

async fn prometheus(State(s): State<Arc<Shared>>) -> Response {
    let text = metrics::render(&s.stats, s.ready.load(Ordering::Relaxed));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

fn shot_doc(shot: &Shot) -> Value {
    json!({
        "seq": shot.seq,
        "task": &*shot.task,
        "camera": &*shot.camera,
        "part_id": shot.part_id,
        "ts": crate::util::time::rfc3339(shot.captured),
        "verdict": shot.verdict,
        "model": &*shot.model,
        "ng_score": shot.ng_score,
        "threshold": shot.threshold,
        "classes": &*shot.classes,
        "scores": shot.scores,
        "detections": shot.detections,
        "error": shot.error,
        "image": shot.image.is_some(),
    })
}

fn status_doc(s: &Shared) -> Value {
    let mut doc = crate::telemetry::json::stats_doc(&s.stats, false);
    let reasons = not_ready(s);
    doc["node"] = json!(s.node);
    doc["ready"] = json!(reasons.is_empty());
    doc["not_ready"] = json!(reasons);
    doc["actions"] = json!(s.auth.has_token());
    let latest: serde_json::Map<String, Value> =
        s.views.all_latest().iter().map(|shot| (shot.camera.to_string(), shot_doc(shot))).collect();
    doc["live"] = Value::Object(latest);
    let head = s.views.gallery().first().map(|g| g.seq);
    doc["rejects_head"] = match &s.stored {
        // Either side's newest changes the gallery.
        Some(st) => json!(format!("{}|{}", head.unwrap_or(0), st.head().unwrap_or_default())),
        None => json!(head),
    };
    doc
}

async fn status(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(status_doc(&s))
}

async fn events(State(s): State<Arc<Shared>>) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((s, true), |(s, first)| async move {
        if !first {
            tokio::time::sleep(s.tick).await;
        }
        let event = Event::default().event("status").data(status_doc(&s).to_string());
        Some((Ok(event), (s, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `shot` as JPEG, made on the drawing thread, or taken from the cache.
async fn jpeg_of(s: &Arc<Shared>, shot: Arc<Shot>) -> Response {
    let cached = s.jpegs.lock().unwrap_or_else(|p| p.into_inner()).get(&shot.seq).cloned();
    let bytes = match cached {
        Some(b) => b,
        None => {
            let seq = shot.seq;
            match s.drawer.draw(shot).await {
                Ok(b) => {
                    let b = Arc::new(b);
                    let mut cache = s.jpegs.lock().unwrap_or_else(|p| p.into_inner());
                    cache.insert(seq, b.clone());
                    while cache.len() > JPEG_CACHE {
                        cache.pop_first();
                    }
                    b
                }
                Err(e) => {
                    return (StatusCode::SERVICE_UNAVAILABLE, format!("cannot draw the frame: {e}\n")).into_response()
                }
            }
        }
    };
    ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], Bytes::from(bytes.as_ref().clone()))
        .into_response()
}

async fn live(State(s): State<Arc<Shared>>, Path(camera): Path<String>) -> Response {
    match s.views.latest(&camera) {
        Some(shot) => jpeg_of(&s, shot).await,
        None => (StatusCode::NOT_FOUND, format!("no judged frame of camera `{camera}` yet\n")).into_response(),
    }
}

/// The gallery: the newest parts that were not OK, from the capture store for the tasks that
/// capture (with their review marks), from the in-memory ring for the others; newest first.
async fn rejects(State(s): State<Arc<Shared>>) -> Json<Value> {
    let Some(stored) = s.stored.clone() else {
        return Json(Value::Array(s.views.gallery().iter().map(|g| shot_doc(g)).collect()));
    };
    let n = s.views.gallery_size();
    // Sidecars are read from disk: off the async threads.
    let from_store = tokio::task::spawn_blocking(move || (stored.tasks(), stored.newest(n))).await;
    let (capturing, kept) = from_store.unwrap_or_default();
    let mut all: Vec<(String, Value)> = s
        .views
        .gallery()
        .iter()
        .filter(|g| !capturing.iter().any(|t| *t == *g.task))
        .map(|g| (crate::util::time::rfc3339(g.captured), shot_doc(g)))
        .collect();
    all.extend(kept.iter().map(|k| (crate::util::time::rfc3339(k.shot.captured), stored_doc(k))));
    all.sort_by(|a, b| b.0.cmp(&a.0));
    Json(Value::Array(all.into_iter().take(n).map(|(_, d)| d).collect()))
}

/// A part from the capture store as the gallery lists it: `key` (for its picture and marks)
/// instead of `seq`, and its review mark.
fn stored_doc(k: &StoredShot) -> Value {
    let mut doc = shot_doc(&k.shot);
    doc["seq"] = Value::Null;
    doc["key"] = json!(k.key);
    doc["image"] = json!(true);
    doc["review"] = k.review.clone();
    doc
}

async fn captured_image(State(s): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let Some(stored) = s.stored.clone() else {
        return (StatusCode::NOT_FOUND, "no task has evidence capture\n").into_response();
    };
    let key2 = key.clone();
    let found = tokio::task::spawn_blocking(move || stored.get(&key2)).await.ok().flatten();
    let Some(k) = found else {
        return (StatusCode::NOT_FOUND, format!("no captured part `{key}` (deleted as the oldest?)\n")).into_response();
    };
    match s.drawer.draw(Arc::new(k.shot)).await {
        Ok(b) => ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], Bytes::from(b))
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("cannot draw the frame: {e}\n")).into_response(),
    }
}

/// A review mark through the page: the token, then the same `mark-part` command as on MQTT
/// (same router, logged under `linesight::audit`); `by` is the operator's name as typed.
async fn mark(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = format!("http {peer}");
    if let Some(answer) = refusal(&s, &headers, &source, "mark refused") {
        return answer;
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct MarkBody {
        task: String,
        part_id: u64,
        mark: String,
        #[serde(default)]
        by: String,
    }
    let m: MarkBody = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            let e = format!("a mark is {{\"task\", \"part_id\", \"mark\", \"by\"}}: {e}");
            tracing::warn!(target: "linesight::audit", %source, error = %e, "mark refused");
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"ok": false, "error": e}))).into_response();
        }
    };
    let name: String = m.by.chars().filter(|c| !c.is_control()).take(64).collect();
    let by = if name.is_empty() { source.clone() } else { format!("{name} ({source})") };
    let cmd = crate::telemetry::commands::Command::MarkPart { task: m.task, part_id: m.part_id, mark: m.mark };
    match s.commander.execute(&cmd, &by).await {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"ok": false, "error": e}))).into_response(),
    }
}

async fn reject_image(State(s): State<Arc<Shared>>, Path(seq): Path<String>) -> Response {
    let shot = seq.trim_end_matches(".jpg").parse().ok().and_then(|n| s.views.kept(n));
    match shot {
        Some(shot) => jpeg_of(&s, shot).await,
        None => (StatusCode::NOT_FOUND, format!("no kept part `{seq}` (the gallery keeps the last ones only)\n"))
            .into_response(),
    }
}

/// The token check every action starts with: None to go on, or the answer to a refusal, which
/// is logged under `linesight::audit` as `refused` (the action's own wording).
fn refusal(s: &Shared, headers: &HeaderMap, source: &str, refused: &str) -> Option<Response> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let r = s.auth.check(authorization, Instant::now()).err()?;
    tracing::warn!(target: "linesight::audit", %source, error = %r.reason, "{refused}");
    let code = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
    Some((code, Json(json!({"ok": false, "error": r.reason}))).into_response())
}

/// A command through the page: the token, then the same parsing, guard and router as MQTT.
async fn command(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = format!("http {peer}");
    if let Some(answer) = refusal(&s, &headers, &source, "command refused") {
        return answer;
    }
    let (id, parsed) = parse_json(&body);
    let result = match parsed {
        Ok(c) => {
            let origin = Origin { source: source.clone(), id: CommandId::json(&id), sent_ms: c.sent_ms };
            match s.commander.admit(&origin, 1).await {
                Ok(()) => s.commander.execute(&c.command, &source).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            tracing::warn!(target: "linesight::audit", %source, id = %id, error = %e, "command refused");
            Err(e)
        }
    };
    match result {
        Ok(()) => Json(json!({"id": id, "ok": true})).into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"id": id, "ok": false, "error": e}))).into_response(),
    }
}

async fn alarms(State(s): State<Arc<Shared>>) -> Json<Value> {
    let ts = |t: std::time::SystemTime| crate::util::time::rfc3339(t);
    Json(Value::Array(
        s.stats
            .faults
            .history()
            .into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "text": r.text,
                    "started": ts(r.started),
                    "ended": r.ended.map(ts),
                    "acknowledged": r.acknowledged.map(|(at, by)| json!({"at": ts(at), "by": by})),
                })
            })
            .collect(),
    ))
}

/// Acknowledge an alarm: the token, then once per alarm; logged under `linesight::audit`.
async fn acknowledge(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = format!("http {peer}");
    if let Some(answer) = refusal(&s, &headers, &source, "alarm acknowledgement refused") {
        return answer;
    }
    // Who, as the operator typed it (optional), beside where the request came from.
    let name: String = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("by").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let by = if name.is_empty() { source.clone() } else { format!("{name} ({source})") };
    match s.stats.faults.acknowledge(id, &by, std::time::SystemTime::now()) {
        Ok(()) => {
            tracing::info!(target: "linesight::audit", %source, alarm = id, by = %by, "alarm acknowledged");
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => {
            tracing::warn!(target: "linesight::audit", %source, alarm = id, error = %e, "alarm acknowledgement refused");
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"ok": false, "error": e}))).into_response()
        }
    }
}

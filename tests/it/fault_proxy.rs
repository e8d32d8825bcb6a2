//! A fault-injecting HTTP proxy in front of the real Kinesis emulator.
//!
//! Emulators never throttle, so the tests put this proxy between tidemark and
//! kinesalite. Everything is forwarded unchanged except `PutRecords`, where the
//! proxy, on a fixed schedule:
//! - answers a whole call with `ProvisionedThroughputExceededException` (400),
//!   forwarding nothing;
//! - fails single records: it removes them from the call it forwards, so they
//!   are not written, and answers them with a `ProvisionedThroughputExceededException`
//!   entry and a `FailedRecordCount`, as Kinesis does;
//! - or answers 500 after forwarding nothing;
//! - and, while `hold` is set, keeps calls waiting, as a paused or hung sink.
//!
//! In front of the DynamoDB emulator it forwards everything, except that the
//! calls [`Injected::hold_calls`] names wait while it is set, as hung calls.
//!
//! The request's signature no longer matches a changed body; kinesalite does
//! not check signatures.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Which `PutRecords` calls and records fail (0 turns a fault off).
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Every n-th call is answered 400 `ProvisionedThroughputExceededException`.
    pub throttle_every_call: usize,
    /// Every n-th call is answered 500 `InternalFailure`.
    pub error_every_call: usize,
    /// Every n-th record of the other calls fails on its own.
    pub fail_every_record: usize,
}

/// What the proxy did, for the test to check that faults happened.
#[derive(Default)]
pub struct Injected {
    pub calls: AtomicUsize,
    pub throttled_calls: AtomicUsize,
    pub failed_calls: AtomicUsize,
    pub failed_records: AtomicUsize,
    pub records_seen: AtomicUsize,
    /// While set, `PutRecords` calls wait (the sink looks paused or hung).
    pub hold: AtomicBool,
    /// While set to (operation, text): calls to that operation (`UpdateItem`)
    /// whose body holds the text wait.
    pub hold_calls: std::sync::Mutex<Option<(String, String)>>,
    /// How many calls wait in [`Injected::hold_calls`] now.
    pub waiting: AtomicUsize,
}

impl Injected {
    pub fn hold_calls(&self, operation: &str, text: &str) {
        *self.hold_calls.lock().expect("hold") = Some((operation.into(), text.into()));
    }

    pub fn release_calls(&self) {
        *self.hold_calls.lock().expect("hold") = None;
    }

    fn held(&self, target: &str, body: &[u8]) -> bool {
        self.hold_calls
            .lock()
            .expect("hold")
            .as_ref()
            .is_some_and(|(operation, text)| {
                target.ends_with(&format!(".{operation}"))
                    && String::from_utf8_lossy(body).contains(text.as_str())
            })
    }
}

struct Proxy {
    upstream: String,
    faults: Faults,
    injected: Arc<Injected>,
    client: Client<HttpConnector, Full<bytes::Bytes>>,
}

/// Starts the proxy on a free local port; returns its URL and its counters.
pub async fn start(upstream: &str, faults: Faults) -> (String, Arc<Injected>) {
    let injected = Arc::new(Injected::default());
    let proxy = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        faults,
        injected: injected.clone(),
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    let app = axum::Router::new().fallback(handle).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fault proxy");
    let url = format!("http://{}", listener.local_addr().expect("proxy address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, injected)
}

fn kinesis_error(status: StatusCode, kind: &str) -> Response {
    let body = json!({ "__type": kind, "message": "injected by the test's fault proxy" });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 64 << 20).await.expect("request body");
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if proxy.injected.held(&target, &body) {
        proxy.injected.waiting.fetch_add(1, Ordering::SeqCst);
        while proxy.injected.held(&target, &body) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        proxy.injected.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    let is_put_records = target.ends_with(".PutRecords");
    if !is_put_records {
        return proxy.forward(&parts, body).await;
    }
    let faults = proxy.faults;
    let injected = &proxy.injected;
    while injected.hold.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let call = injected.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if faults.throttle_every_call > 0 && call % faults.throttle_every_call == 0 {
        injected.throttled_calls.fetch_add(1, Ordering::SeqCst);
        return kinesis_error(
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
        );
    }
    if faults.error_every_call > 0 && call % faults.error_every_call == 0 {
        injected.failed_calls.fetch_add(1, Ordering::SeqCst);
        return kinesis_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure");
    }
    let mut request: Value = serde_json::from_slice(&body).expect("PutRecords JSON");
    let records = request["Records"]
        .as_array()
        .cloned()
        .expect("PutRecords records");
    let mut failed = Vec::with_capacity(records.len());
    let mut kept = Vec::new();
    for record in records {
        let seen = injected.records_seen.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = faults.fail_every_record > 0 && seen % faults.fail_every_record == 0;
        failed.push(fail);
        if !fail {
            kept.push(record);
        }
    }
    let mut upstream_results = Vec::new().into_iter();
    let mut failed_count = 0;
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let answer = proxy
            .forward(&parts, bytes::Bytes::from(request.to_string()))
            .await;
        if !answer.status().is_success() {
            return answer;
        }
        let body = to_bytes(answer.into_body(), 64 << 20)
            .await
            .expect("emulator body");
        let answer: Value = serde_json::from_slice(&body).expect("emulator JSON");
        failed_count = answer["FailedRecordCount"].as_u64().unwrap_or(0);
        upstream_results = answer["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
    }
    let results: Vec<Value> = failed
        .iter()
        .map(|&fail| {
            if fail {
                injected.failed_records.fetch_add(1, Ordering::SeqCst);
                failed_count += 1;
                json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "injected by the test's fault proxy"
                })
            } else {
                upstream_results
                    .next()
                    .expect("a result per forwarded record")
            }
        })
        .collect();
    let body = json!({ "FailedRecordCount": failed_count, "Records": results });
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

impl Proxy {
    /// Sends the request on to the emulator and returns its answer.
    async fn forward(&self, parts: &axum::http::request::Parts, body: bytes::Bytes) -> Response {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path}", self.upstream));
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        let request = request
            .header("content-length", body.len())
            .body(Full::new(body))
            .expect("proxied request");
        let answer = self
            .client
            .request(request)
            .await
            .expect("the emulator answers the proxy");
        let (mut parts, body) = answer.into_parts();
        let body = body.collect().await.expect("emulator body").to_bytes();
        parts.headers.remove("content-length");
        Response::from_parts(parts, Body::from(body))
    }
}

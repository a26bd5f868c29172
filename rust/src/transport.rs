//! Delivery's HTTP client: the one module of the crate that does I/O, built only into the extension.
//!
//! The mapping never uses it. It is here because aiohttp's client was most of the event loop's cost per
//! delivered request, and the loop is shared with ingest: hyper (through reqwest) runs on a thread of its
//! own, outside the GIL, and the event loop only hands requests over and collects answers in batches.
//!
//! With the event loop: `send` starts a request and returns at once. When requests finish, their
//! completions are queued and a byte is written to a socket whose other end (`fileno`) the loop watches;
//! the loop then takes every queued completion with `completed`.

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// An answer's body is kept up to this size (Button's are a few hundred bytes; an error page stays small).
const MAX_BODY_BYTES: usize = 1 << 20;
/// A failure's description is cut to this many characters.
const MAX_ERROR_CHARS: usize = 500;

/// `(id, status, body, Retry-After, error)`: status, body and Retry-After when an answer came, else the
/// error.
type PyCompletion<'py> = (u64, Option<u16>, Bound<'py, PyBytes>, Option<String>, Option<String>);

struct Answer {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<String>,
}

struct Completions {
    done: Mutex<Vec<(u64, Result<Answer, String>)>>,
    wake: UnixStream,
}

impl Completions {
    fn push(&self, id: u64, outcome: Result<Answer, String>) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        done.push((id, outcome));
        // Only the first completion of a batch wakes the loop: the others are taken with it (`completed`
        // reads the wake-ups before it takes the queue). A full socket already holds a wake-up.
        if done.len() == 1 {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// An HTTP/1.1 client with a connection pool, TLS (rustls, the system's certificates) and a
/// timeout per request, end to end. Proxy variables are ignored, as aiohttp does by default.
#[pyclass(frozen, module = "button_sidecar._core")]
pub struct HttpTransport {
    client: reqwest::Client,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    completions: Arc<Completions>,
    wake_read: UnixStream,
}

#[pymethods]
impl HttpTransport {
    #[new]
    #[pyo3(signature = (*, timeout_secs, headers = Vec::new()))]
    fn new(timeout_secs: f64, headers: Vec<(String, String)>) -> PyResult<Self> {
        let timeout = Duration::try_from_secs_f64(timeout_secs)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "timeout_secs: must be a positive number of seconds, not {timeout_secs}"
                ))
            })?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(header_map(headers)?)
            .no_proxy()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("the HTTP client cannot start: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("button-sidecar-http")
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(format!("the HTTP client's thread cannot start: {e}")))?;
        let (wake_read, wake) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        Ok(Self {
            client,
            runtime: Mutex::new(Some(runtime)),
            completions: Arc::new(Completions {
                done: Mutex::new(Vec::new()),
                wake,
            }),
            wake_read,
        })
    }

    /// The socket that becomes readable when completions are queued (for `loop.add_reader`).
    fn fileno(&self) -> i32 {
        self.wake_read.as_raw_fd()
    }

    /// Start a request; its completion comes out of `completed` under `id`.
    #[pyo3(signature = (id, method, url, headers, body = None))]
    fn send(
        &self,
        id: u64,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<&[u8]>,
    ) -> PyResult<()> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("method: {method:?} is not an HTTP method")))?;
        let url = reqwest::Url::parse(url).map_err(|e| PyValueError::new_err(format!("url: {e}")))?;
        let mut request = self.client.request(method, url).headers(header_map(headers)?);
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        let guard = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        let runtime = guard
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the HTTP client is closed"))?;
        let completions = Arc::clone(&self.completions);
        let handle = runtime.handle().clone();
        runtime.spawn(async move {
            // In a task of its own, so that even a panic in the client comes back as this request's error.
            let outcome = match handle.spawn(perform(request)).await {
                Ok(outcome) => outcome,
                Err(error) => Err(format!("internal error in the HTTP client: {error}")),
            };
            completions.push(id, outcome);
        });
        Ok(())
    }

    /// Every completion queued since the last call.
    fn completed<'py>(&self, py: Python<'py>) -> PyResult<Vec<PyCompletion<'py>>> {
        // Wake-ups first: a completion queued after the `take` below writes a new one.
        let mut sink = [0u8; 512];
        loop {
            match (&self.wake_read).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let done = std::mem::take(&mut *self.completions.done.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(done
            .into_iter()
            .map(|(id, outcome)| match outcome {
                Ok(answer) => (
                    id,
                    Some(answer.status),
                    PyBytes::new(py, &answer.body),
                    answer.retry_after,
                    None,
                ),
                Err(error) => (id, None, PyBytes::new(py, b""), None, Some(error)),
            })
            .collect())
    }

    /// Abandon the requests under way (they never complete) and stop the client's thread.
    fn close(&self) {
        if let Some(runtime) = self.runtime.lock().unwrap_or_else(PoisonError::into_inner).take() {
            runtime.shutdown_background();
        }
    }
}

fn header_map(headers: Vec<(String, String)>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("headers: {name:?} is not a header name")))?;
        // The value is not quoted: it may be a credential.
        let value = HeaderValue::from_str(&value).map_err(|_| {
            PyValueError::new_err(format!("headers: the value of {name:?} is not a valid header value"))
        })?;
        map.append(key, value);
    }
    Ok(map)
}

async fn perform(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        let room = MAX_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_BODY_BYTES {
            break;
        }
    }
    Ok(Answer {
        status,
        body,
        retry_after,
    })
}

/// What failed, with its causes; never the URL (it holds order ids) nor a header.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text.chars().take(MAX_ERROR_CHARS).collect()
}

//! The `button_sidecar._core` extension: a thin PyO3 layer over the pure core.

use crate::config::TransformConfig as CoreConfig;
use crate::errors::{ErrorKind, Rejection as CoreRejection};
use crate::model::{
    Attribution as CoreAttribution, ButtonRequest as CoreRequest, Skip as CoreSkip, TransformResult as CoreResult,
};
use crate::{currency, email, money, proto, transform};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::pyclass_init::PyClassInitializer;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use pyo3::PyClass;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{SystemTime, UNIX_EPOCH};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Options of the mapping, validated on construction (a ValueError names the bad field).
#[pyclass(frozen, module = "button_sidecar._core")]
pub struct TransformConfig {
    inner: CoreConfig,
}

#[pymethods]
impl TransformConfig {
    #[new]
    #[pyo3(signature = (
        *,
        default_currency = "USD",
        include_tax_and_shipping = false,
        send_email = true,
        require_btn_ref = false,
        forward_activity = false,
        forward_app_events = false,
        application_ids = None,
        gdpr_purpose = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        default_currency: &str,
        include_tax_and_shipping: bool,
        send_email: bool,
        require_btn_ref: bool,
        forward_activity: bool,
        forward_app_events: bool,
        application_ids: Option<BTreeMap<String, String>>,
        gdpr_purpose: Option<String>,
    ) -> PyResult<Self> {
        let inner = CoreConfig {
            default_currency: default_currency.to_string(),
            include_tax_and_shipping,
            send_email,
            require_btn_ref,
            forward_activity,
            forward_app_events,
            application_ids: application_ids.unwrap_or_default().into_iter().collect(),
            gdpr_purpose,
        }
        .validated()
        .map_err(PyValueError::new_err)?;
        Ok(TransformConfig { inner })
    }

    #[getter]
    fn default_currency(&self) -> &str {
        &self.inner.default_currency
    }
    #[getter]
    fn include_tax_and_shipping(&self) -> bool {
        self.inner.include_tax_and_shipping
    }
    #[getter]
    fn send_email(&self) -> bool {
        self.inner.send_email
    }
    #[getter]
    fn require_btn_ref(&self) -> bool {
        self.inner.require_btn_ref
    }
    #[getter]
    fn forward_activity(&self) -> bool {
        self.inner.forward_activity
    }
    #[getter]
    fn forward_app_events(&self) -> bool {
        self.inner.forward_app_events
    }
    #[getter]
    fn application_ids(&self) -> BTreeMap<String, String> {
        self.inner.application_ids.iter().cloned().collect()
    }
    #[getter]
    fn gdpr_purpose(&self) -> Option<&str> {
        self.inner.gdpr_purpose.as_deref()
    }

    fn __repr__(&self) -> String {
        format!("TransformConfig({:?})", self.inner)
    }
}

/// One Button API call to make (or, for kind `refund`, a refund for the delivery layer to resolve).
#[pyclass(frozen, get_all, module = "button_sidecar._core")]
pub struct ButtonRequest {
    kind: &'static str,
    method: Option<&'static str>,
    path: Option<String>,
    body: Option<Py<PyBytes>>,
    order_id: String,
    event_index: i64,
    btn_ref: Option<String>,
}

#[pymethods]
impl ButtonRequest {
    fn __repr__(&self) -> String {
        format!(
            "ButtonRequest(kind={:?}, method={:?}, path={:?}, order_id={:?}, event_index={})",
            self.kind, self.method, self.path, self.order_id, self.event_index
        )
    }
}

/// Why an event (event_index >= 0) or the whole batch (-1) was not mapped.
#[pyclass(frozen, get_all, module = "button_sidecar._core")]
pub struct Rejection {
    event_index: i64,
    code: &'static str,
    field: String,
    message: String,
}

#[pymethods]
impl Rejection {
    fn __repr__(&self) -> String {
        format!(
            "Rejection(event_index={}, code={:?}, field={:?}, message={:?})",
            self.event_index, self.code, self.field, self.message
        )
    }
}

/// A `btn_ref` learned for a user.
#[pyclass(frozen, get_all, module = "button_sidecar._core")]
pub struct Attribution {
    user_keys: Vec<String>,
    btn_ref: String,
    timestamp_ms: i64,
}

#[pymethods]
impl Attribution {
    fn __repr__(&self) -> String {
        format!(
            "Attribution(btn_ref={:?}, timestamp_ms={}, user_keys={:?})",
            self.btn_ref, self.timestamp_ms, self.user_keys
        )
    }
}

/// An event understood but not mapped (a count, not an error).
#[pyclass(frozen, get_all, module = "button_sidecar._core")]
pub struct Skip {
    event_index: i64,
    reason: &'static str,
}

#[pymethods]
impl Skip {
    fn __repr__(&self) -> String {
        format!("Skip(event_index={}, reason={:?})", self.event_index, self.reason)
    }
}

/// Python objects made on first access and then kept: many callers never look at skips or
/// attributions, and building an object per event was a visible share of a transform.
struct Lazy<R, P: PyClass> {
    items: Vec<R>,
    objects: PyOnceLock<Vec<Py<P>>>,
}

impl<R, P: PyClass + Into<PyClassInitializer<P>>> Lazy<R, P> {
    fn new(items: Vec<R>) -> Self {
        Lazy {
            items,
            objects: PyOnceLock::new(),
        }
    }

    fn get(&self, py: Python<'_>, make: impl Fn(Python<'_>, &R) -> P) -> PyResult<Vec<Py<P>>> {
        let objects = self
            .objects
            .get_or_try_init(py, || self.items.iter().map(|r| Py::new(py, make(py, r))).collect())?;
        Ok(objects.iter().map(|o| o.clone_ref(py)).collect())
    }
}

/// The outcome of one batch.
#[pyclass(frozen, module = "button_sidecar._core")]
pub struct TransformResult {
    requests: Lazy<CoreRequest, ButtonRequest>,
    rejections: Lazy<CoreRejection, Rejection>,
    attributions: Lazy<CoreAttribution, Attribution>,
    skipped: Lazy<CoreSkip, Skip>,
    #[pyo3(get)]
    event_count: usize,
    #[pyo3(get)]
    user_keys: Vec<String>,
    #[pyo3(get)]
    source_request_id: Option<String>,
    #[pyo3(get)]
    environment: Option<String>,
    #[pyo3(get)]
    filtered: Option<&'static str>,
}

#[pymethods]
impl TransformResult {
    #[getter]
    fn requests(&self, py: Python<'_>) -> PyResult<Vec<Py<ButtonRequest>>> {
        self.requests.get(py, |py, r| ButtonRequest {
            kind: r.kind.as_str(),
            method: r.method,
            path: r.path.clone(),
            body: r.body.as_ref().map(|b| PyBytes::new(py, b).unbind()),
            order_id: r.order_id.clone(),
            event_index: r.event_index,
            btn_ref: r.btn_ref.clone(),
        })
    }

    #[getter]
    fn rejections(&self, py: Python<'_>) -> PyResult<Vec<Py<Rejection>>> {
        self.rejections.get(py, |_, r| Rejection {
            event_index: r.event_index,
            code: r.kind.code(),
            field: r.field.clone(),
            message: r.message.clone(),
        })
    }

    #[getter]
    fn attributions(&self, py: Python<'_>) -> PyResult<Vec<Py<Attribution>>> {
        self.attributions.get(py, |_, a| Attribution {
            user_keys: a.user_keys.clone(),
            btn_ref: a.btn_ref.clone(),
            timestamp_ms: a.timestamp_ms,
        })
    }

    #[getter]
    fn skipped(&self, py: Python<'_>) -> PyResult<Vec<Py<Skip>>> {
        self.skipped.get(py, |_, s| Skip {
            event_index: s.event_index,
            reason: s.reason,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "TransformResult(requests={}, rejections={}, attributions={}, skipped={}, filtered={:?})",
            self.requests.items.len(),
            self.rejections.items.len(),
            self.attributions.items.len(),
            self.skipped.items.len(),
            self.filtered
        )
    }
}

fn to_python(result: CoreResult) -> TransformResult {
    TransformResult {
        requests: Lazy::new(result.requests),
        rejections: Lazy::new(result.rejections),
        attributions: Lazy::new(result.attributions),
        skipped: Lazy::new(result.skipped),
        event_count: result.event_count,
        user_keys: result.user_keys,
        source_request_id: result.source_request_id,
        environment: result.environment,
        filtered: result.filtered,
    }
}

/// The raw batch bytes, or why the text cannot be read as UTF-8 (e.g. lone surrogates).
type Input = Result<Raw, String>;

/// A batch's bytes, read in place from an immutable `bytes` or `str` (no copy, usable with the GIL
/// released); a `bytearray`, which may change, is copied.
enum Raw {
    Bytes(PyBackedBytes),
    Text(PyBackedStr),
}

impl Raw {
    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Bytes(bytes) => bytes,
            Raw::Text(text) => text.as_bytes(),
        }
    }
}

fn read_input(obj: &Bound<'_, PyAny>) -> PyResult<Input> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(Ok(Raw::Bytes(PyBackedBytes::from(bytes.clone()))));
    }
    if let Ok(bytes) = obj.cast::<PyByteArray>() {
        return Ok(Ok(Raw::Bytes(PyBackedBytes::from(bytes.clone()))));
    }
    if let Ok(text) = obj.cast::<PyString>() {
        return Ok(PyBackedStr::try_from(text.clone())
            .map(Raw::Text)
            .map_err(|_| "the text is not valid Unicode (lone surrogates)".to_string()));
    }
    Err(PyTypeError::new_err(format!(
        "expected bytes or str holding one mParticle batch, got {}",
        obj.get_type().name()?
    )))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The encodings a batch arrives in.
#[derive(Clone, Copy)]
enum Form {
    /// mParticle JSON.
    Json,
    /// A serialised `button_sidecar.v1.Batch`.
    Batch,
    /// A serialised `button_sidecar.v1.IngestRequest` (either payload).
    IngestRequest,
}

/// Runs the core on one input; a panic (a bug) becomes an `internal_error` rejection of this batch
/// only, never a crash of the process or of the other batches.
fn run(config: &CoreConfig, form: Form, input: &Input, received_at_ms: i64) -> CoreResult {
    let bytes = match input {
        Ok(raw) => raw.bytes(),
        Err(message) => {
            return batch_rejection(ErrorKind::InvalidJson, message.clone());
        }
    };
    catch_unwind(AssertUnwindSafe(|| match form {
        Form::Json => transform::transform_json(config, bytes, received_at_ms),
        Form::Batch => proto::transform_batch(config, bytes, received_at_ms),
        Form::IngestRequest => proto::transform_ingest(config, bytes, received_at_ms),
    }))
    .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> CoreResult {
    batch_rejection(ErrorKind::InternalError, "internal error while mapping".to_string())
}

fn batch_rejection(kind: ErrorKind, message: String) -> CoreResult {
    CoreResult {
        rejections: vec![CoreRejection {
            event_index: -1,
            kind,
            field: "$".to_string(),
            message,
        }],
        ..CoreResult::default()
    }
}

/// Maps mParticle batches to Button requests. Thread-safe; the GIL is released while Rust works.
#[pyclass(frozen, module = "button_sidecar._core")]
pub struct Transformer {
    config: Py<TransformConfig>,
}

#[pymethods]
impl Transformer {
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(py: Python<'_>, config: Option<Py<TransformConfig>>) -> PyResult<Self> {
        let config = match config {
            Some(config) => config,
            None => Py::new(
                py,
                TransformConfig {
                    inner: CoreConfig::default(),
                },
            )?,
        };
        Ok(Transformer { config })
    }

    #[getter]
    fn config(&self, py: Python<'_>) -> Py<TransformConfig> {
        self.config.clone_ref(py)
    }

    /// One batch (bytes or str). `received_at_ms` stands in for missing timestamps (default: now).
    #[pyo3(signature = (raw, received_at_ms = None))]
    fn transform_json(
        &self,
        py: Python<'_>,
        raw: &Bound<'_, PyAny>,
        received_at_ms: Option<i64>,
    ) -> PyResult<TransformResult> {
        self.transform_one(py, Form::Json, raw, received_at_ms)
    }

    /// One serialised `button_sidecar.v1.Batch` (the typed form), mapped by the same rules.
    #[pyo3(signature = (raw, received_at_ms = None))]
    fn transform_batch_proto(
        &self,
        py: Python<'_>,
        raw: &Bound<'_, PyAny>,
        received_at_ms: Option<i64>,
    ) -> PyResult<TransformResult> {
        self.transform_one(py, Form::Batch, raw, received_at_ms)
    }

    /// One serialised `button_sidecar.v1.IngestRequest`, as the gRPC server receives it.
    #[pyo3(signature = (raw, received_at_ms = None))]
    fn transform_ingest_request(
        &self,
        py: Python<'_>,
        raw: &Bound<'_, PyAny>,
        received_at_ms: Option<i64>,
    ) -> PyResult<TransformResult> {
        self.transform_one(py, Form::IngestRequest, raw, received_at_ms)
    }

    /// One serialised `button_sidecar.v1.IngestBulkRequest`: a result per batch, in order.
    /// A ValueError when the message as a whole is not a valid protobuf.
    #[pyo3(signature = (raw, received_at_ms = None))]
    fn transform_ingest_bulk(
        &self,
        py: Python<'_>,
        raw: &Bound<'_, PyAny>,
        received_at_ms: Option<i64>,
    ) -> PyResult<Vec<TransformResult>> {
        let input = read_input(raw)?.map_err(PyValueError::new_err)?;
        let config = &self.config.get().inner;
        let received = received_at_ms.unwrap_or_else(now_ms);
        let results = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                proto::transform_ingest_bulk(config, input.bytes(), received)
            }))
            .unwrap_or_else(|_| Some(vec![internal_error()]))
        });
        let results = results.ok_or_else(|| PyValueError::new_err("not a valid IngestBulkRequest protobuf message"))?;
        Ok(results.into_iter().map(to_python).collect())
    }

    /// Many batches at once, in order; the work runs with the GIL released.
    #[pyo3(signature = (raws, received_at_ms = None))]
    fn transform_many(
        &self,
        py: Python<'_>,
        raws: Vec<Bound<'_, PyAny>>,
        received_at_ms: Option<i64>,
    ) -> PyResult<Vec<TransformResult>> {
        let inputs = raws.iter().map(read_input).collect::<PyResult<Vec<_>>>()?;
        let config = &self.config.get().inner;
        let received = received_at_ms.unwrap_or_else(now_ms);
        let results: Vec<CoreResult> =
            py.detach(|| inputs.iter().map(|i| run(config, Form::Json, i, received)).collect());
        Ok(results.into_iter().map(to_python).collect())
    }
}

impl Transformer {
    fn transform_one(
        &self,
        py: Python<'_>,
        form: Form,
        raw: &Bound<'_, PyAny>,
        received_at_ms: Option<i64>,
    ) -> PyResult<TransformResult> {
        let input = read_input(raw)?;
        let config = &self.config.get().inner;
        let received = received_at_ms.unwrap_or_else(now_ms);
        let result = py.detach(|| run(config, form, &input, received));
        Ok(to_python(result))
    }
}

/// SHA-256 hex of a normalised email (trimmed, lower-cased); a 64-hex value is taken as a hash.
#[pyfunction]
fn hash_email(email: &str) -> PyResult<String> {
    email::hash_email(email).ok_or_else(|| PyValueError::new_err("email: is empty"))
}

/// An amount (decimal text or int; never float) in the minor units of an ISO 4217 currency.
#[pyfunction]
fn to_minor_units(amount: &Bound<'_, PyAny>, currency: &str) -> PyResult<i64> {
    let text = if let Ok(s) = amount.cast::<PyString>() {
        s.to_str()?.to_string()
    } else if amount.is_instance_of::<pyo3::types::PyBool>() || amount.is_instance_of::<pyo3::types::PyFloat>() {
        return Err(PyTypeError::new_err(
            "amount: pass decimal text or an int; floats are not exact",
        ));
    } else if amount.is_instance_of::<pyo3::types::PyInt>() {
        amount.str()?.to_str()?.to_string()
    } else {
        // decimal.Decimal and other exact numbers render their exact value as text.
        amount.str()?.to_str()?.to_string()
    };
    let code = currency.trim().to_ascii_uppercase();
    let exponent = currency::exponent(&code)
        .ok_or_else(|| PyValueError::new_err("currency: must be an active ISO 4217 currency code"))?;
    money::to_minor_units(&text, exponent).map_err(|e| {
        PyValueError::new_err(match e {
            money::MoneyError::Syntax => "amount: must be a decimal number",
            money::MoneyError::Overflow => "amount: does not fit in 64-bit minor units",
        })
    })
}

/// Benchmark floor: parses each JSON batch the way the transform does, without mapping it; returns
/// how many parsed. Lets the benchmarks show what the mapping costs on top of parsing.
#[pyfunction(name = "_parse_floor")]
fn parse_floor(py: Python<'_>, raws: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
    let inputs = raws.iter().map(read_input).collect::<PyResult<Vec<_>>>()?;
    Ok(py.detach(|| {
        inputs
            .iter()
            .filter(|i| matches!(i, Ok(raw) if serde_json::from_slice::<serde_json::Value>(raw.bytes()).is_ok()))
            .count()
    }))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) { "debug" } else { "release" },
    )?;
    m.add_class::<TransformConfig>()?;
    m.add_class::<Transformer>()?;
    m.add_class::<TransformResult>()?;
    m.add_class::<ButtonRequest>()?;
    m.add_class::<Rejection>()?;
    m.add_class::<Attribution>()?;
    m.add_class::<Skip>()?;
    m.add_class::<crate::transport::HttpTransport>()?;
    m.add_function(wrap_pyfunction!(hash_email, m)?)?;
    m.add_function(wrap_pyfunction!(to_minor_units, m)?)?;
    m.add_function(wrap_pyfunction!(parse_floor, m)?)?;
    Ok(())
}

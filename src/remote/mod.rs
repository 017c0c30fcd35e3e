//! Network stages executed by a Triton Inference Server (`run --server URL`):
//! the KServe v2 protocol over HTTP with binary tensors ([`kserve`]). The
//! pipeline (pre-processing, tiles, blending, x0, color fix, writing) stays
//! ours; a [`RemoteModel`] stands where an ONNX Runtime session would.
//!
//! Transient failures (connection refused or reset, timeouts, HTTP 429, 502,
//! 503, 504) are retried with exponential backoff; after the last try the
//! server counts as unreachable ([`Error::ServerUnreachable`], which stops a
//! batch). A missing model or a request the model refuses is not retried.

pub mod kserve;
mod slots;

pub use slots::{RequestSlot, RequestSlots};

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::runtime::{DType, InputTensor, OutputTensor, PortInfo};
use kserve::{ModelMetadata, WireData, WireInput};

/// How the client talks to the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Base URL, `http://host:port` (the KServe v2 HTTP endpoint).
    pub url: String,
    /// Longest one request may take (the SD-size UNet on a CPU server takes
    /// tens of seconds).
    pub request_timeout: Duration,
    /// Tries after the first for transient failures.
    pub retries: u32,
    /// Wait before the first retry; doubled each time, capped at 5 s.
    pub first_backoff: Duration,
    /// Most requests in flight at once (`--inflight`), shared by every
    /// clone of these options: the pipelines of one batch together never
    /// send more.
    pub requests: RequestSlots,
}

impl ServerOptions {
    /// Defaults for `url`: 300 s per request, 5 retries from 0.25 s
    /// (about 8 s of trying in all).
    pub fn new(url: &str) -> Self {
        ServerOptions {
            url: url.trim_end_matches('/').to_string(),
            request_timeout: Duration::from_secs(300),
            retries: 5,
            first_backoff: Duration::from_millis(250),
            requests: RequestSlots::new(1),
        }
    }

    /// Requests one image may have in flight: its tiles are sent this many
    /// at a time.
    pub fn inflight(&self) -> usize {
        self.requests.capacity()
    }
}

/// Largest response body read (a 4096x4096 fp32 image is 201 MB).
const MAX_RESPONSE_BYTES: u64 = 2 << 30;

/// Largest health or metadata reply read (Triton's are a few KiB).
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// One attempt's outcome when it failed.
enum Failure {
    /// Worth another try (the server may be restarting or busy).
    Transient(String),
    /// Final: the server answered and refused.
    Final(Error),
}

/// A connection to one server (cheap to clone: the agent is shared).
#[derive(Clone)]
pub struct Server {
    agent: ureq::Agent,
    options: ServerOptions,
}

struct Reply {
    status: u16,
    json_len: Option<usize>,
    body: Vec<u8>,
}

impl Server {
    /// Checks the URL and that the server is live and ready (with retries).
    pub fn connect(options: ServerOptions) -> Result<Server> {
        let rest = options.url.strip_prefix("http://").ok_or_else(|| {
            Error::InvalidOption(format!(
                "--server {}: give the server's HTTP endpoint as http://HOST:PORT (https and gRPC are not supported)",
                options.url
            ))
        })?;
        // a URL the HTTP client would refuse on every try is the user's to fix, at once
        let parses = options.url.parse::<ureq::http::Uri>().is_ok_and(|uri| {
            uri.authority().is_some_and(|authority| {
                // a port given must be one (0..=65535)
                let has_port = !authority.as_str().ends_with(authority.host());
                !authority.host().is_empty() && (!has_port || authority.port_u16().is_some())
            })
        });
        if rest.is_empty() || rest.contains(char::is_whitespace) || !parses {
            return Err(Error::InvalidOption(format!(
                "--server {}: not a URL; give http://HOST:PORT",
                options.url
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(options.request_timeout))
            .timeout_connect(Some(Duration::from_secs(10)))
            .max_idle_connections_per_host(64)
            .build();
        let server = Server {
            agent: config.into(),
            options,
        };
        server.with_retries("check that the server is ready", || {
            let reply = server.get("/v2/health/ready")?;
            match reply.status {
                200 => Ok(()),
                status => Err(Failure::Transient(format!(
                    "not ready (HTTP {status} from /v2/health/ready)"
                ))),
            }
        })?;
        Ok(server)
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.options.url
    }

    fn transport_failure(&self, error: ureq::Error) -> Failure {
        match error {
            ureq::Error::BadUri(uri) => Failure::Final(Error::InvalidOption(format!(
                "--server {}: not a usable URL ({uri})",
                self.options.url
            ))),
            ureq::Error::BodyExceedsLimit(limit) => Failure::Final(
                self.refused(format!("a response is larger than {} MiB", limit >> 20)),
            ),
            other => Failure::Transient(other.to_string()),
        }
    }

    fn reply(
        &self,
        response: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> std::result::Result<Reply, Failure> {
        let mut response = response.map_err(|e| self.transport_failure(e))?;
        let status = response.status().as_u16();
        let json_len = response
            .headers()
            .get(kserve::HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.transport_failure(e))?;
        if matches!(status, 429 | 502 | 503 | 504) {
            return Err(Failure::Transient(format!(
                "HTTP {status}: {}",
                kserve::error_text(&body)
            )));
        }
        Ok(Reply {
            status,
            json_len,
            body,
        })
    }

    fn get(&self, path: &str) -> std::result::Result<Reply, Failure> {
        // health and metadata replies are small: a server sending more is
        // refused before it fills memory
        self.reply(
            self.agent.get(format!("{}{path}", self.options.url)).call(),
            MAX_METADATA_BYTES,
        )
    }

    fn post(&self, path: &str, body: &kserve::RequestBody) -> std::result::Result<Reply, Failure> {
        // a slot per attempt: none is held while waiting to retry
        let _slot = self.options.requests.take();
        self.reply(
            self.agent
                .post(format!("{}{path}", self.options.url))
                .header(kserve::HEADER_LENGTH, body.json_len.to_string())
                .content_type("application/octet-stream")
                .send(&body.bytes[..]),
            MAX_RESPONSE_BYTES,
        )
    }

    fn refused(&self, reason: String) -> Error {
        Error::Server {
            url: self.options.url.clone(),
            reason,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// are spent (then the server is unreachable).
    fn with_retries<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut backoff = self.options.first_backoff;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt() {
                Ok(value) => return Ok(value),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Transient(reason)) if tries > self.options.retries => {
                    return Err(Error::ServerUnreachable {
                        url: self.options.url.clone(),
                        what: what.to_string(),
                        reason,
                        tries,
                        seconds: start.elapsed().as_secs_f64(),
                    })
                }
                Err(Failure::Transient(_)) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Opens a model: its metadata must exist, the model must be ready, and
    /// where its configuration records the graph's sha256 (repositories of
    /// `python -m export.triton`), that must be `expected_sha256`: a server
    /// loaded with another bundle's graphs is refused, not silently used.
    pub fn model(&self, name: &str, expected_sha256: &str) -> Result<RemoteModel> {
        let metadata = self.with_retries(&format!("read model {name}"), || {
            let reply = self.get(&format!("/v2/models/{name}"))?;
            match reply.status {
                200 => kserve::parse_metadata(&reply.body)
                    .map_err(|reason| Failure::Final(self.refused(format!("model {name}: {reason}")))),
                404 | 400 => Err(Failure::Final(self.refused(format!(
                    "has no model {name:?} ({}); load the repository that `python -m export.triton --bundle MODEL --out REPO` writes",
                    kserve::error_text(&reply.body)
                )))),
                status => Err(Failure::Final(self.refused(format!(
                    "model {name}: HTTP {status}: {}",
                    kserve::error_text(&reply.body)
                )))),
            }
        })?;
        let ready = self.with_retries(&format!("check model {name}"), || {
            Ok(self.get(&format!("/v2/models/{name}/ready"))?.status == 200)
        })?;
        if !ready {
            return Err(self.refused(format!(
                "model {name:?} is not ready (see the server's log: it may have failed to load)"
            )));
        }
        let served = self.with_retries(&format!("read model {name}'s config"), || {
            let reply = self.get(&format!("/v2/models/{name}/config"))?;
            Ok((reply.status == 200)
                .then(|| kserve::config_graph_sha256(&reply.body))
                .flatten())
        })?;
        if let Some(served) = served {
            if !served.eq_ignore_ascii_case(expected_sha256) {
                return Err(self.refused(format!(
                    "serves another {name} graph than the bundle's (sha256 {} on the server, {} in manifest.json): \
                     give --model the bundle the repository was written from, or write the repository again \
                     with python -m export.triton --bundle MODEL",
                    short(&served),
                    short(expected_sha256)
                )));
            }
        }
        let ports = |list: &[kserve::MetadataPort]| {
            list.iter()
                .map(|p| PortInfo {
                    name: p.name.clone(),
                    dtype: p.dtype,
                    shape: p.shape.clone(),
                })
                .collect()
        };
        Ok(RemoteModel {
            server: self.clone(),
            name: name.to_string(),
            inputs: ports(&metadata.inputs),
            outputs: ports(&metadata.outputs),
            metadata,
            constants: Vec::new(),
        })
    }
}

/// The first 12 characters of a hash, for messages.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[derive(Debug, Clone, PartialEq)]
enum OwnedData {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

/// One model on the server, used like an ONNX Runtime session.
pub struct RemoteModel {
    server: Server,
    name: String,
    metadata: ModelMetadata,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    /// Inputs sent with every request ([`Graph::set_constant`]).
    constants: Vec<(String, Vec<usize>, OwnedData)>,
}

impl RemoteModel {
    fn wire_input<'a>(&self, name: &'a str, shape: &[usize], data: WireData<'a>) -> WireInput<'a> {
        let server_shape = self
            .metadata
            .inputs
            .iter()
            .find(|p| p.name == name)
            .map_or(&[][..], |p| p.shape.as_slice());
        WireInput {
            name,
            shape: kserve::wire_shape(shape, server_shape),
            data,
        }
    }

    fn float_data<'a>(&self, name: &str, data: &'a [f32]) -> WireData<'a> {
        let half = self
            .inputs
            .iter()
            .any(|p| p.name == name && p.dtype == DType::Float16);
        if half {
            WireData::Float16(data)
        } else {
            WireData::Float32(data)
        }
    }
}

impl Graph for RemoteModel {
    fn inputs(&self) -> &[PortInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[PortInfo] {
        &self.outputs
    }

    fn set_constant(&mut self, name: &str, tensor: InputTensor<'_>) -> Result<()> {
        let (shape, data) = match tensor {
            InputTensor::Float { shape, data } => (shape.to_vec(), OwnedData::Float(data.to_vec())),
            InputTensor::Int64 { shape, data } => (shape.to_vec(), OwnedData::Int64(data.to_vec())),
        };
        self.constants.retain(|(n, _, _)| n != name);
        self.constants.push((name.to_string(), shape, data));
        Ok(())
    }

    fn run(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        self.infer(inputs, output_names)
    }

    /// One request per run, all in flight at once (as many as the request
    /// slots allow); the outputs in the order of `runs`. The first error
    /// found in that order is returned.
    fn run_group(
        &mut self,
        runs: &[Vec<(&str, InputTensor<'_>)>],
        output_names: &[&str],
    ) -> Result<Vec<Vec<OutputTensor>>> {
        if runs.len() <= 1 {
            return runs
                .iter()
                .map(|inputs| self.infer(inputs, output_names))
                .collect();
        }
        let model = &*self;
        std::thread::scope(|scope| {
            let requests: Vec<_> = runs
                .iter()
                .map(|inputs| scope.spawn(move || model.infer(inputs, output_names)))
                .collect();
            requests
                .into_iter()
                .map(|request| {
                    request.join().unwrap_or_else(|_| {
                        Err(Error::Ort(format!(
                            "a request to model {} failed unexpectedly",
                            model.name
                        )))
                    })
                })
                .collect()
        })
    }
}

impl RemoteModel {
    /// One inference request: `inputs` and the constants in, the named
    /// outputs back, in order.
    fn infer(
        &self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let mut wire = Vec::with_capacity(inputs.len() + self.constants.len());
        for (name, tensor) in inputs {
            wire.push(match tensor {
                InputTensor::Float { shape, data } => {
                    self.wire_input(name, shape, self.float_data(name, data))
                }
                InputTensor::Int64 { shape, data } => {
                    self.wire_input(name, shape, WireData::Int64(data))
                }
            });
        }
        for (name, shape, data) in &self.constants {
            wire.push(match data {
                OwnedData::Float(values) => {
                    self.wire_input(name, shape, self.float_data(name, values))
                }
                OwnedData::Int64(values) => self.wire_input(name, shape, WireData::Int64(values)),
            });
        }
        let body = kserve::encode_request(&wire, output_names).map_err(|reason| {
            self.server
                .refused(format!("model {}: {reason}", self.name))
        })?;
        let path = format!("/v2/models/{}/infer", self.name);
        let name = self.name.clone();
        let server = &self.server;
        let reply = server.with_retries(&format!("run model {name}"), || {
            let reply = server.post(&path, &body)?;
            if reply.status == 200 {
                Ok(reply)
            } else {
                Err(Failure::Final(server.refused(format!(
                    "model {name} refused the request (HTTP {}): {}",
                    reply.status,
                    kserve::error_text(&reply.body)
                ))))
            }
        })?;
        let mut outputs = kserve::decode_response(&reply.body, reply.json_len)
            .map_err(|reason| server.refused(format!("model {name}: {reason}")))?;
        output_names
            .iter()
            .map(|wanted| {
                let index = outputs
                    .iter()
                    .position(|o| o.name == *wanted)
                    .ok_or_else(|| {
                        server.refused(format!("model {name} did not return {wanted}"))
                    })?;
                let output = outputs.swap_remove(index);
                Ok(OutputTensor {
                    shape: output.shape,
                    data: output.data,
                })
            })
            .collect()
    }
}

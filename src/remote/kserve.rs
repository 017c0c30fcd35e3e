//! The KServe v2 inference protocol over HTTP with Triton's binary tensor
//! extension: a request is a JSON header followed by the raw little-endian
//! bytes of each input, the JSON's length in the `Inference-Header-Content-Length`
//! header; the response has the same shape. Pure functions: building a
//! request body, parsing a response body, reading model metadata.

use half::f16;
use serde_json::{json, Value};

use crate::runtime::DType;

/// The HTTP header that gives the JSON part's length in bytes.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// Data of one request input, in the element type the server's model takes.
#[derive(Debug, Clone, Copy)]
pub enum WireData<'a> {
    Float32(&'a [f32]),
    /// f32 values sent as FP16 (the model takes half precision).
    Float16(&'a [f32]),
    Int64(&'a [i64]),
}

impl WireData<'_> {
    fn datatype(&self) -> &'static str {
        match self {
            WireData::Float32(_) => "FP32",
            WireData::Float16(_) => "FP16",
            WireData::Int64(_) => "INT64",
        }
    }

    fn len(&self) -> usize {
        match self {
            WireData::Float32(d) | WireData::Float16(d) => d.len(),
            WireData::Int64(d) => d.len(),
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            WireData::Float32(d) => d.len() * 4,
            WireData::Float16(d) => d.len() * 2,
            WireData::Int64(d) => d.len() * 8,
        }
    }

    fn append_to(&self, body: &mut Vec<u8>) {
        match self {
            WireData::Float32(d) => d
                .iter()
                .for_each(|v| body.extend_from_slice(&v.to_le_bytes())),
            WireData::Float16(d) => d
                .iter()
                .for_each(|v| body.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            WireData::Int64(d) => d
                .iter()
                .for_each(|v| body.extend_from_slice(&v.to_le_bytes())),
        }
    }
}

/// One named input of a request.
#[derive(Debug, Clone)]
pub struct WireInput<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: WireData<'a>,
}

/// A request body and the length of its JSON part.
#[derive(Debug)]
pub struct RequestBody {
    pub bytes: Vec<u8>,
    pub json_len: usize,
}

/// Builds an infer request asking for `outputs` as binary data.
pub fn encode_request(inputs: &[WireInput<'_>], outputs: &[&str]) -> Result<RequestBody, String> {
    for input in inputs {
        let elements: usize = input.shape.iter().product();
        if elements != input.data.len() {
            return Err(format!(
                "input {}: shape {:?} holds {elements} values, not {}",
                input.name,
                input.shape,
                input.data.len()
            ));
        }
    }
    let header = json!({
        "inputs": inputs.iter().map(|input| json!({
            "name": input.name,
            "shape": input.shape,
            "datatype": input.data.datatype(),
            "parameters": {"binary_data_size": input.data.byte_len()},
        })).collect::<Vec<_>>(),
        "outputs": outputs.iter().map(|name| json!({
            "name": name,
            "parameters": {"binary_data": true},
        })).collect::<Vec<_>>(),
    });
    let mut bytes = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let json_len = bytes.len();
    bytes.reserve(inputs.iter().map(|i| i.data.byte_len()).sum());
    for input in inputs {
        input.data.append_to(&mut bytes);
    }
    Ok(RequestBody { bytes, json_len })
}

/// One output of a response, widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct WireOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The error text of a JSON error body (`{"error": "..."}`), or the body
/// itself, cut to one line of at most 300 characters.
pub fn error_text(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        format!("{}...", line.chars().take(300).collect::<String>())
    } else {
        line
    }
}

fn shape_of(value: &Value) -> Option<Vec<usize>> {
    value
        .as_array()?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect()
}

/// Parses an infer response. `json_len`: the `Inference-Header-Content-Length`
/// header (None: the whole body is JSON, outputs must then be binary anyway).
pub fn decode_response(body: &[u8], json_len: Option<usize>) -> Result<Vec<WireOutput>, String> {
    let json_len = json_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(format!(
            "response header says {json_len} bytes of JSON, the body has {}",
            body.len()
        ));
    }
    let header: Value = serde_json::from_slice(&body[..json_len])
        .map_err(|e| format!("response is not KServe v2 JSON: {e}"))?;
    let outputs = header
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("response has no outputs")?;
    let mut offset = json_len;
    let mut decoded = Vec::with_capacity(outputs.len());
    for output in outputs {
        let name = output
            .get("name")
            .and_then(Value::as_str)
            .ok_or("an output has no name")?
            .to_string();
        let shape = output
            .get("shape")
            .and_then(shape_of)
            .ok_or_else(|| format!("output {name}: no valid shape"))?;
        let elements = shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d))
            .ok_or_else(|| format!("output {name}: shape {shape:?} overflows"))?;
        let datatype = output.get("datatype").and_then(Value::as_str).unwrap_or("");
        let width = match datatype {
            "FP32" => 4,
            "FP16" => 2,
            other => {
                return Err(format!(
                    "output {name}: datatype {other:?}, expected FP32 or FP16"
                ))
            }
        };
        let size = output
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("output {name}: not sent as binary data"))?;
        let size = usize::try_from(size).map_err(|_| format!("output {name}: size too large"))?;
        if elements.checked_mul(width) != Some(size) {
            return Err(format!(
                "output {name}: {size} bytes for shape {shape:?} of {datatype}"
            ));
        }
        let end = offset
            .checked_add(size)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| format!("output {name}: the body ends early"))?;
        let bytes = &body[offset..end];
        offset = end;
        let data = if width == 4 {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        };
        decoded.push(WireOutput { name, shape, data });
    }
    Ok(decoded)
}

/// A model port as the server's metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataPort {
    pub name: String,
    pub dtype: DType,
    /// Dimensions, -1 for dynamic ones (the batch axis included when the
    /// model batches).
    pub shape: Vec<i64>,
}

/// A model's inputs and outputs from `GET /v2/models/NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    pub inputs: Vec<MetadataPort>,
    pub outputs: Vec<MetadataPort>,
}

fn dtype_of(datatype: &str) -> DType {
    match datatype {
        "FP32" => DType::Float32,
        "FP16" => DType::Float16,
        "INT64" => DType::Int64,
        "INT32" => DType::Other("int32"),
        "UINT8" => DType::Other("uint8"),
        "BOOL" => DType::Other("bool"),
        "FP64" => DType::Other("float64"),
        _ => DType::Other("unknown"),
    }
}

/// Parses model metadata.
pub fn parse_metadata(body: &[u8]) -> Result<ModelMetadata, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("model metadata is not JSON: {e}"))?;
    let ports = |key: &str| -> Result<Vec<MetadataPort>, String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("model metadata has no {key}"))?
            .iter()
            .map(|port| {
                let name = port.get("name").and_then(Value::as_str);
                let datatype = port.get("datatype").and_then(Value::as_str);
                let shape = port
                    .get("shape")
                    .and_then(Value::as_array)
                    .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>());
                match (name, datatype, shape) {
                    (Some(name), Some(datatype), Some(shape)) => Ok(MetadataPort {
                        name: name.to_string(),
                        dtype: dtype_of(datatype),
                        shape,
                    }),
                    _ => Err(format!("model metadata: a malformed {key} entry: {port}")),
                }
            })
            .collect()
    };
    Ok(ModelMetadata {
        inputs: ports("inputs")?,
        outputs: ports("outputs")?,
    })
}

/// The model parameter `python -m export.triton` writes: the sha256 of the
/// ONNX file the model serves, from the bundle's manifest.
pub const GRAPH_SHA256_PARAMETER: &str = "tadsr_graph_sha256";

/// The graph's sha256 from a model's configuration (`GET
/// /v2/models/NAME/config`); None when the repository did not record it.
pub fn config_graph_sha256(body: &[u8]) -> Option<String> {
    let config: Value = serde_json::from_slice(body).ok()?;
    config
        .get("parameters")?
        .get(GRAPH_SHA256_PARAMETER)?
        .get("string_value")?
        .as_str()
        .map(str::to_string)
}

/// The shape to send for one of our tensors: a batched model whose port is
/// one value per request (Triton's `dims: [1]`, `reshape: []`, our
/// `timestep` of shape `[batch]`) takes `[batch, 1]`.
pub fn wire_shape(ours: &[usize], server: &[i64]) -> Vec<usize> {
    if server.len() == ours.len() + 1 && server.last() == Some(&1) {
        let mut shape = ours.to_vec();
        shape.push(1);
        shape
    } else {
        ours.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(header: Value, payload: &[u8]) -> (Vec<u8>, usize) {
        let mut body = serde_json::to_vec(&header).unwrap();
        let len = body.len();
        body.extend_from_slice(payload);
        (body, len)
    }

    #[test]
    fn request_has_the_json_then_each_input_in_order() {
        let image = [1.0f32, -2.5];
        let timestep = [7i64];
        let body = encode_request(
            &[
                WireInput {
                    name: "image",
                    shape: vec![1, 2],
                    data: WireData::Float32(&image),
                },
                WireInput {
                    name: "timestep",
                    shape: vec![1, 1],
                    data: WireData::Int64(&timestep),
                },
            ],
            &["latent_mean"],
        )
        .unwrap();
        let header: Value = serde_json::from_slice(&body.bytes[..body.json_len]).unwrap();
        assert_eq!(header["inputs"][0]["datatype"], "FP32");
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(header["inputs"][1]["shape"], json!([1, 1]));
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
        let payload = &body.bytes[body.json_len..];
        assert_eq!(payload.len(), 16);
        assert_eq!(&payload[..4], &1.0f32.to_le_bytes());
        assert_eq!(&payload[4..8], &(-2.5f32).to_le_bytes());
        assert_eq!(&payload[8..], &7i64.to_le_bytes());
    }

    #[test]
    fn fp16_inputs_are_narrowed_and_shapes_checked() {
        let data = [0.5f32, 1.0, 2.0];
        let body = encode_request(
            &[WireInput {
                name: "latent",
                shape: vec![3],
                data: WireData::Float16(&data),
            }],
            &[],
        )
        .unwrap();
        assert_eq!(
            &body.bytes[body.json_len..][..2],
            &f16::from_f32(0.5).to_le_bytes()
        );
        let wrong = encode_request(
            &[WireInput {
                name: "latent",
                shape: vec![2, 2],
                data: WireData::Float32(&data),
            }],
            &[],
        );
        assert!(wrong.unwrap_err().contains("holds 4 values, not 3"));
    }

    #[test]
    fn response_outputs_are_split_by_their_sizes() {
        let mut payload = Vec::new();
        [1.5f32, 2.5]
            .iter()
            .for_each(|v| payload.extend_from_slice(&v.to_le_bytes()));
        payload.extend_from_slice(&f16::from_f32(-3.0).to_le_bytes());
        let (body, len) = response(
            json!({"outputs": [
                {"name": "a", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
                {"name": "b", "datatype": "FP16", "shape": [1], "parameters": {"binary_data_size": 2}},
            ]}),
            &payload,
        );
        let outputs = decode_response(&body, Some(len)).unwrap();
        assert_eq!(outputs[0].data, vec![1.5, 2.5]);
        assert_eq!(outputs[0].shape, vec![1, 2]);
        assert_eq!(outputs[1].data, vec![-3.0]);
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let header = json!({"outputs": [
            {"name": "a", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}]});
        let (body, len) = response(header.clone(), &[0u8; 8]);
        assert!(decode_response(&body, Some(len))
            .unwrap_err()
            .contains("ends early"));
        let (body, len) = response(header, &[0u8; 16]);
        assert!(decode_response(&body, Some(len + 100)).is_err());
        let (body, len) = response(
            json!({"outputs": [{"name": "a", "datatype": "FP32", "shape": [3],
                                 "parameters": {"binary_data_size": 16}}]}),
            &[0u8; 16],
        );
        assert!(decode_response(&body, Some(len))
            .unwrap_err()
            .contains("16 bytes"));
        let (body, len) = response(
            json!({"outputs": [{"name": "a", "datatype": "FP32",
                                 "shape": [u64::MAX, 4], "parameters": {"binary_data_size": 16}}]}),
            &[0u8; 16],
        );
        assert!(decode_response(&body, Some(len)).is_err());
        assert!(decode_response(b"not json", None).is_err());
        assert!(decode_response(b"{\"error\": \"x\"}", None).is_err());
    }

    #[test]
    fn error_text_reads_the_error_field_on_one_line() {
        assert_eq!(
            error_text(br#"{"error":"unexpected shape for input 'latent'\n for model 'unet'"}"#),
            "unexpected shape for input 'latent' for model 'unet'"
        );
        assert_eq!(error_text(b"plain\ntext"), "plain text");
        assert!(error_text(&vec![b'x'; 1000]).ends_with("..."));
    }

    #[test]
    fn graph_sha256_is_read_from_the_model_config() {
        let config =
            br#"{"name":"unet","parameters":{"tadsr_graph_sha256":{"string_value":"ab12"}}}"#;
        assert_eq!(config_graph_sha256(config).as_deref(), Some("ab12"));
        assert_eq!(config_graph_sha256(br#"{"name":"unet"}"#), None);
        assert_eq!(config_graph_sha256(b"not json"), None);
    }

    #[test]
    fn metadata_and_per_request_scalars() {
        let metadata = parse_metadata(
            br#"{"name":"unet","inputs":[{"name":"latent","datatype":"FP32","shape":[-1,4,-1,-1]},
               {"name":"timestep","datatype":"INT64","shape":[-1,1]}],
               "outputs":[{"name":"residual","datatype":"FP16","shape":[-1,4,-1,-1]}]}"#,
        )
        .unwrap();
        assert_eq!(metadata.inputs[1].dtype, DType::Int64);
        assert_eq!(metadata.outputs[0].dtype, DType::Float16);
        assert_eq!(wire_shape(&[1], &metadata.inputs[1].shape), vec![1, 1]);
        assert_eq!(
            wire_shape(&[1, 4, 8, 8], &metadata.inputs[0].shape),
            vec![1, 4, 8, 8]
        );
        // an unbatched model's timestep [-1] is sent as it is
        assert_eq!(wire_shape(&[1], &[-1]), vec![1]);
        assert!(parse_metadata(br#"{"inputs": [{"name": 3}], "outputs": []}"#).is_err());
    }
}

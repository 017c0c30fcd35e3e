//! ONNX Runtime through the real discovery path, on a graph this test builds
//! itself (protobuf written by hand below), and the not-found error.

use std::process::Command;

use tadsr_edge::runtime::{InputTensor, Runtime, SessionOptions};

/// Minimal protobuf writer: enough for a ModelProto.
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.0.push(byte);
                break;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn int(mut self, field: u32, value: u64) -> Self {
        self.varint(u64::from(field) << 3);
        self.varint(value);
        self
    }
    fn bytes(mut self, field: u32, value: &[u8]) -> Self {
        self.varint((u64::from(field) << 3) | 2);
        self.varint(value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }
    fn text(self, field: u32, value: &str) -> Self {
        self.bytes(field, value.as_bytes())
    }
    fn message(self, field: u32, value: Proto) -> Self {
        self.bytes(field, &value.0)
    }
}

/// ValueInfoProto of a float tensor with a fixed shape.
fn float_value_info(name: &str, dims: &[u64]) -> Proto {
    let shape = dims.iter().fold(Proto::default(), |shape, dim| {
        shape.message(1, Proto::default().int(1, *dim))
    });
    let tensor_type = Proto::default().int(1, 1).message(2, shape); // elem_type FLOAT
    let type_proto = Proto::default().message(1, tensor_type);
    Proto::default().text(1, name).message(2, type_proto)
}

fn node(inputs: &[&str], output: &str, op: &str) -> Proto {
    let node = inputs
        .iter()
        .fold(Proto::default(), |n, input| n.text(1, input));
    node.text(2, output).text(4, op)
}

/// y = a * b + a, over [2, 3] float tensors, opset 17.
fn multiply_add_model() -> Vec<u8> {
    let graph = Proto::default()
        .message(1, node(&["a", "b"], "product", "Mul"))
        .message(1, node(&["product", "a"], "y", "Add"))
        .text(2, "multiply_add")
        .message(11, float_value_info("a", &[2, 3]))
        .message(11, float_value_info("b", &[2, 3]))
        .message(12, float_value_info("y", &[2, 3]));
    let opset = Proto::default().text(1, "").int(2, 17);
    Proto::default()
        .int(1, 8) // ir_version
        .text(2, "tadsr-edge-test")
        .message(7, graph)
        .message(8, opset)
        .0
}

#[test]
fn runs_a_graph_built_here_through_the_discovered_library() {
    let runtime = Runtime::global(None).expect("ONNX Runtime must be found (run `make setup`)");
    assert!(runtime.library().path.exists());
    assert!(
        runtime.version().starts_with("1."),
        "version {}",
        runtime.version()
    );

    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("multiply_add.onnx");
    std::fs::write(&model_path, multiply_add_model()).unwrap();
    let mut session = runtime
        .session(&model_path, &SessionOptions::default())
        .expect("session");
    let a = [1.0f32, -2.0, 3.5, 0.0, 10.0, -0.25];
    let b = [2.0f32, 4.0, -1.0, 7.0, 0.5, 8.0];
    let shape = [2usize, 3];
    let outputs = session
        .run(
            &[
                (
                    "a",
                    InputTensor::Float {
                        shape: &shape,
                        data: &a,
                    },
                ),
                (
                    "b",
                    InputTensor::Float {
                        shape: &shape,
                        data: &b,
                    },
                ),
            ],
            &["y"],
        )
        .expect("run");
    assert_eq!(outputs[0].shape, vec![2, 3]);
    let expected: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a * b + a).collect();
    assert_eq!(outputs[0].data, expected);

    let missing = session.run(
        &[(
            "a",
            InputTensor::Float {
                shape: &shape,
                data: &a,
            },
        )],
        &["y"],
    );
    assert!(missing.is_err(), "a missing input must be an error");
}

#[test]
fn a_missing_library_is_one_line_and_exit_code_2() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .arg("info")
        .env_remove("ORT_DYLIB_PATH")
        .env("XDG_CACHE_HOME", empty.path())
        .env("PATH", empty.path()) // no python3 to ask either
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: ONNX Runtime library not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("make setup") && stderr.contains("ORT_DYLIB_PATH"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_explicit_library_is_refused_not_bypassed() {
    let output = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args(["--ort-lib", "/nonexistent/libonnxruntime.so", "info"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
}

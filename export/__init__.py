"""tadsr-edge exporter: TADSR (PyTorch) -> ONNX bundle. See export/README.md and docs/bundle-format.md."""

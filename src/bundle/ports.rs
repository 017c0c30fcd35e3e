//! An opened graph against the manifest: every port the manifest lists must
//! be in the graph, by name, with the manifest's element type (a re-exported
//! graph with renamed or retyped ports is the bundle's fault, said before a
//! run fails on it).

use super::Bundle;
use crate::error::{Error, Result};
use crate::runtime::PortInfo;

/// Checks `component`'s graph ports (`inputs`, `outputs`, as the opened
/// session reports them) against the manifest.
pub fn check_graph_ports(
    bundle: &Bundle,
    component: &str,
    inputs: &[PortInfo],
    outputs: &[PortInfo],
) -> Result<()> {
    let spec = bundle.component(component);
    for (direction, expected, actual) in [
        ("input", &spec.inputs, inputs),
        ("output", &spec.outputs, outputs),
    ] {
        for port in expected {
            let found = actual.iter().find(|p| p.name == port.name).ok_or_else(|| {
                Error::bundle(
                    bundle.root(),
                    format!("{component} graph has no {direction} {:?}", port.name),
                )
            })?;
            if found.dtype.name() != port.dtype.as_str() {
                return Err(Error::bundle(
                    bundle.root(),
                    format!(
                        "{component} {direction} {:?} is {} in the graph but {} in the manifest",
                        port.name,
                        found.dtype.name(),
                        port.dtype
                    ),
                ));
            }
        }
    }
    Ok(())
}

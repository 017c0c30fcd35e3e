//! An opened graph against the manifest: every port the manifest lists must
//! be in the graph, by name, with the manifest's element type and with the
//! sizes the manifest fixes, and the graph may need no input the manifest
//! does not list (a re-exported or swapped graph with renamed,
//! retyped or resized ports is the bundle's fault, said before a run fails on
//! it).

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
            check_fixed_dims(&port.shape, &found.shape).map_err(|reason| {
                Error::bundle(
                    bundle.root(),
                    format!("{component} {direction} {:?}: {reason}", port.name),
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
    // an input the manifest does not list would be missing from every run
    // (another component's graph in its place: the tiled decoder's statistics)
    if let Some(extra) = inputs
        .iter()
        .find(|input| !spec.inputs.iter().any(|port| port.name == input.name))
    {
        return Err(Error::bundle(
            bundle.root(),
            format!(
                "{component} graph needs an input {:?} that the manifest does not list (another graph in its place?)",
                extra.name
            ),
        ));
    }
    Ok(())
}

/// The manifest's `shape` (numbers for fixed axes, names for free ones)
/// against the graph's (-1 for free axes): every axis both fix of the same
/// size. Shapes of another rank are not compared: a Triton server with
/// batching reports its own batch axis in front of the model's ([-1, 1] for
/// a timestep of [1]).
fn check_fixed_dims(
    manifest: &[serde_json::Value],
    graph: &[i64],
) -> std::result::Result<(), String> {
    if manifest.len() != graph.len() {
        return Ok(());
    }
    for (axis, (listed, actual)) in manifest.iter().zip(graph).enumerate() {
        if let (Some(listed), true) = (listed.as_u64(), *actual >= 0) {
            if listed != *actual as u64 {
                return Err(format!(
                    "axis {axis} is {actual} in the graph but {listed} in the manifest"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_fixed_dims;
    use serde_json::json;

    #[test]
    fn fixed_axes_must_agree_and_free_ones_may_be_anything() {
        let manifest = [
            json!("batch"),
            json!(4),
            json!("latent_height"),
            json!("latent_width"),
        ];
        assert!(check_fixed_dims(&manifest, &[-1, 4, -1, -1]).is_ok());
        // a pinned graph (static shapes) fixes the named axes: still fine
        assert!(check_fixed_dims(&manifest, &[1, 4, 64, 64]).is_ok());
        assert!(check_fixed_dims(&manifest, &[-1, -1, -1, -1]).is_ok());
        let wrong = check_fixed_dims(&manifest, &[-1, 3, -1, -1]).unwrap_err();
        assert!(wrong.contains("axis 1 is 3 in the graph but 4"), "{wrong}");
        // another rank (a server's batch axis in front) is not compared
        assert!(check_fixed_dims(&[json!(1)], &[-1, 1]).is_ok());
        // nothing to compare against
        assert!(check_fixed_dims(&[], &[1, 2]).is_ok());
        assert!(check_fixed_dims(&manifest, &[]).is_ok());
    }
}

//! Several runs of one graph as one batched run (`--tile-batch`): inputs
//! with a batch axis are stacked along it, the others must be the same in
//! every run; outputs are cut back into one `[1, ...]` tensor per run.
//! Pure functions on shapes and data.

/// One input of one run, as shape and data of either element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Data<'a> {
    Float(&'a [f32]),
    Int64(&'a [i64]),
}

/// A stacked (or shared) input, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Stacked {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

/// Stacks one input over `runs` (each `[1, ...]` of the same shape) into
/// `[n, ...]`; None when the shapes differ, a run's batch is not 1, or the
/// element types differ.
pub fn stack(runs: &[(&[usize], Data<'_>)]) -> Option<(Vec<usize>, Stacked)> {
    let (first_shape, first_data) = runs.first()?;
    if first_shape.first() != Some(&1) || runs.iter().any(|(shape, _)| shape != first_shape) {
        return None;
    }
    let mut shape = first_shape.to_vec();
    shape[0] = runs.len();
    let stacked = match first_data {
        Data::Float(_) => Stacked::Float(concat(runs, |data| match data {
            Data::Float(values) => Some(values),
            Data::Int64(_) => None,
        })?),
        Data::Int64(_) => Stacked::Int64(concat(runs, |data| match data {
            Data::Int64(values) => Some(values),
            Data::Float(_) => None,
        })?),
    };
    Some((shape, stacked))
}

/// Every run's values of one element type, in order (None when a run has
/// the other type).
fn concat<'a, T: Copy + 'a>(
    runs: &[(&[usize], Data<'a>)],
    values: impl Fn(Data<'a>) -> Option<&'a [T]>,
) -> Option<Vec<T>> {
    let mut all = Vec::new();
    for (_, data) in runs {
        all.extend_from_slice(values(*data)?);
    }
    Some(all)
}

/// A `[1, ...]` input repeated `n` times along the batch axis (a constant
/// such as the prompt embedding or the timestep); None when its batch is
/// not 1.
pub fn repeat(shape: &[usize], data: Data<'_>, n: usize) -> Option<(Vec<usize>, Stacked)> {
    let runs = vec![(shape, data); n];
    stack(&runs)
}

/// Whether every run has the same value for an input without a batch axis.
pub fn all_equal(runs: &[(&[usize], Data<'_>)]) -> bool {
    runs.windows(2).all(|pair| pair[0] == pair[1])
}

/// Cuts an `[n, ...]` output into `n` outputs of `[1, ...]`; None when its
/// batch is not `n` or the data does not fill the shape.
pub fn split(shape: &[usize], data: &[f32], n: usize) -> Option<Vec<(Vec<usize>, Vec<f32>)>> {
    if shape.first() != Some(&n) || n == 0 {
        return None;
    }
    let each: usize = shape[1..].iter().product();
    if data.len() != each * n {
        return None;
    }
    let mut one = shape.to_vec();
    one[0] = 1;
    Some(
        data.chunks_exact(each)
            .map(|chunk| (one.clone(), chunk.to_vec()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_then_splitting_gives_the_runs_back() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let shape = [1usize, 1, 2, 2];
        let (stacked_shape, stacked) =
            stack(&[(&shape, Data::Float(&a)), (&shape, Data::Float(&b))]).unwrap();
        assert_eq!(stacked_shape, vec![2, 1, 2, 2]);
        let Stacked::Float(values) = stacked else {
            panic!("float")
        };
        assert_eq!(values, [a, b].concat());
        let parts = split(&stacked_shape, &values, 2).unwrap();
        assert_eq!(parts[0], (shape.to_vec(), a.to_vec()));
        assert_eq!(parts[1], (shape.to_vec(), b.to_vec()));
    }

    #[test]
    fn runs_of_other_shapes_or_batches_are_not_stacked() {
        let a = [1.0; 4];
        let b = [1.0; 6];
        assert!(stack(&[
            (&[1, 1, 2, 2], Data::Float(&a)),
            (&[1, 1, 2, 3], Data::Float(&b))
        ])
        .is_none());
        assert!(stack(&[(&[2, 1, 1, 2], Data::Float(&a))]).is_none());
        assert!(stack(&[
            (&[1, 4], Data::Float(&a)),
            (&[1, 4], Data::Int64(&[1, 2, 3, 4]))
        ])
        .is_none());
        assert!(stack(&[]).is_none());
    }

    #[test]
    fn constants_repeat_and_shared_inputs_must_agree() {
        let (shape, repeated) = repeat(&[1], Data::Int64(&[500]), 3).unwrap();
        assert_eq!(shape, vec![3]);
        assert_eq!(repeated, Stacked::Int64(vec![500, 500, 500]));
        let stats = [0.5f32, 0.25];
        let other = [0.5f32, 0.75];
        assert!(all_equal(&[
            (&[2], Data::Float(&stats)),
            (&[2], Data::Float(&stats))
        ]));
        assert!(!all_equal(&[
            (&[2], Data::Float(&stats)),
            (&[2], Data::Float(&other))
        ]));
    }

    #[test]
    fn a_split_checks_the_batch_and_the_size() {
        assert!(split(&[3, 2], &[0.0; 6], 2).is_none());
        assert!(split(&[2, 2], &[0.0; 5], 2).is_none());
        assert_eq!(split(&[2, 2], &[1.0, 2.0, 3.0, 4.0], 2).unwrap().len(), 2);
    }
}

//! The SD-2.1 DDPM noise schedule and the clean latent from the UNet residual.

/// Training steps of the SD-2.1 scheduler.
pub const NUM_TRAIN_TIMESTEPS: usize = 1000;
/// First beta of the "scaled_linear" schedule.
pub const BETA_START: f64 = 0.00085;
/// Last beta of the "scaled_linear" schedule.
pub const BETA_END: f64 = 0.012;

/// Errors from schedule construction, timestep lookup and the clean latent.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("timestep {timestep} is out of range 0..{num_train_timesteps}")]
    TimestepOutOfRange {
        timestep: i64,
        num_train_timesteps: usize,
    },
    #[error("a schedule needs at least one step")]
    EmptySchedule,
    #[error("alphas_cumprod[{index}] = {value} is not in (0, 1]")]
    InvalidAlphaCumprod { index: usize, value: f32 },
    #[error("latent has {latent} values but the residual has {residual}")]
    LengthMismatch { latent: usize, residual: usize },
}

/// `alphas_cumprod` of the "scaled_linear" schedule:
/// `betas = linspace(sqrt(beta_start), sqrt(beta_end), n)^2`,
/// `alphas_cumprod = cumprod(1 - betas)`, computed in `f64`, stored as `f32`.
pub fn scaled_linear_alphas_cumprod(
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
) -> Vec<f32> {
    let sqrt_start = beta_start.sqrt();
    let sqrt_end = beta_end.sqrt();
    let step = if num_train_timesteps > 1 {
        (sqrt_end - sqrt_start) / (num_train_timesteps - 1) as f64
    } else {
        0.0
    };
    let mut alpha_cumprod = 1.0f64;
    (0..num_train_timesteps)
        .map(|index| {
            let sqrt_beta = sqrt_start + step * index as f64;
            alpha_cumprod *= 1.0 - sqrt_beta * sqrt_beta;
            alpha_cumprod as f32
        })
        .collect()
}

/// A DDPM schedule's cumulative alpha products, indexed by integer timestep.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f32>,
}

impl Default for NoiseSchedule {
    /// The SD-2.1 schedule (1000 steps, scaled_linear 0.00085 .. 0.012).
    fn default() -> Self {
        NoiseSchedule {
            alphas_cumprod: scaled_linear_alphas_cumprod(NUM_TRAIN_TIMESTEPS, BETA_START, BETA_END),
        }
    }
}

impl NoiseSchedule {
    /// The SD-2.1 schedule.
    pub fn sd21() -> Self {
        NoiseSchedule::default()
    }

    /// The schedule a bundle declares: its `alphas_cumprod` when listed,
    /// else the "scaled_linear" formula with its betas and step count.
    pub fn from_spec(spec: &crate::bundle::ScheduleSpec) -> Result<Self, ScheduleError> {
        if spec.alphas_cumprod.is_empty() {
            if spec.num_train_timesteps == 0 {
                return Err(ScheduleError::EmptySchedule);
            }
            return Ok(NoiseSchedule {
                alphas_cumprod: scaled_linear_alphas_cumprod(
                    spec.num_train_timesteps,
                    spec.beta_start,
                    spec.beta_end,
                ),
            });
        }
        Self::from_alphas_cumprod(spec.alphas_cumprod.iter().map(|&a| a as f32).collect())
    }

    /// A schedule from given values (e.g. a bundle manifest's `alphas_cumprod`).
    pub fn from_alphas_cumprod(alphas_cumprod: Vec<f32>) -> Result<Self, ScheduleError> {
        if alphas_cumprod.is_empty() {
            return Err(ScheduleError::EmptySchedule);
        }
        if let Some((index, &value)) = alphas_cumprod
            .iter()
            .enumerate()
            .find(|(_, &value)| !(value > 0.0 && value <= 1.0))
        {
            return Err(ScheduleError::InvalidAlphaCumprod { index, value });
        }
        Ok(NoiseSchedule { alphas_cumprod })
    }

    /// Number of training timesteps (valid timesteps are `0..len`).
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// All values, index = timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Checks that `timestep` is in `0..num_train_timesteps` and returns it as an index.
    pub fn validate_timestep(&self, timestep: i64) -> Result<usize, ScheduleError> {
        usize::try_from(timestep)
            .ok()
            .filter(|&index| index < self.alphas_cumprod.len())
            .ok_or(ScheduleError::TimestepOutOfRange {
                timestep,
                num_train_timesteps: self.alphas_cumprod.len(),
            })
    }

    /// `alphas_cumprod[t]`.
    pub fn alpha_cumprod(&self, timestep: i64) -> Result<f32, ScheduleError> {
        Ok(self.alphas_cumprod[self.validate_timestep(timestep)?])
    }
}

/// Spec step 9 in place: `latent = latent / sqrt(alpha_cumprod_t) - residual`
/// (`latent` is the scaled latent `z * 0.18215`; it becomes the clean latent x0).
pub fn clean_latent_in_place(
    latent: &mut [f32],
    residual: &[f32],
    alpha_cumprod_t: f32,
) -> Result<(), ScheduleError> {
    if latent.len() != residual.len() {
        return Err(ScheduleError::LengthMismatch {
            latent: latent.len(),
            residual: residual.len(),
        });
    }
    if !(alpha_cumprod_t > 0.0 && alpha_cumprod_t <= 1.0) {
        return Err(ScheduleError::InvalidAlphaCumprod {
            index: 0,
            value: alpha_cumprod_t,
        });
    }
    // torch: `latent / alpha_prod_t ** 0.5 - residual`, all in f32.
    let sqrt_alpha_cumprod = alpha_cumprod_t.sqrt();
    for (value, &eps) in latent.iter_mut().zip(residual) {
        *value = *value / sqrt_alpha_cumprod - eps;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `alphas_cumprod` from the formula, step by step in f64 with linspace as `start + i * step`.
    fn direct_f64(n: usize) -> Vec<f64> {
        let start = BETA_START.sqrt();
        let end = BETA_END.sqrt();
        let mut product = 1.0;
        (0..n)
            .map(|i| {
                let beta = (start + (end - start) * i as f64 / (n - 1) as f64).powi(2);
                product *= 1.0 - beta;
                product
            })
            .collect()
    }

    #[test]
    fn matches_a_direct_f64_computation() {
        let schedule = NoiseSchedule::sd21();
        assert_eq!(schedule.num_train_timesteps(), 1000);
        for (ours, reference) in schedule.alphas_cumprod().iter().zip(direct_f64(1000)) {
            let relative = (f64::from(*ours) - reference).abs() / reference;
            assert!(relative < 1e-6, "{ours} vs {reference}");
        }
    }

    #[test]
    fn known_values_of_the_sd_schedule() {
        let schedule = NoiseSchedule::sd21();
        let values = schedule.alphas_cumprod();
        assert!((values[0] - (1.0 - 0.00085)).abs() < 1e-7);
        // torch gives 0.0046601 for alphas_cumprod[999] (float32).
        assert!((values[999] - 0.004_660_1).abs() < 1e-6, "{}", values[999]);
        assert!(values.windows(2).all(|pair| pair[1] < pair[0]));
    }

    #[test]
    fn timestep_validation() {
        let schedule = NoiseSchedule::sd21();
        assert_eq!(schedule.validate_timestep(0), Ok(0));
        assert_eq!(schedule.validate_timestep(999), Ok(999));
        assert_eq!(
            schedule.validate_timestep(1000),
            Err(ScheduleError::TimestepOutOfRange {
                timestep: 1000,
                num_train_timesteps: 1000
            })
        );
        assert!(schedule.alpha_cumprod(-1).is_err());
        assert_eq!(
            schedule.alpha_cumprod(500).unwrap(),
            schedule.alphas_cumprod()[500]
        );
    }

    #[test]
    fn schedule_from_values_is_validated() {
        assert_eq!(
            NoiseSchedule::from_alphas_cumprod(vec![]),
            Err(ScheduleError::EmptySchedule)
        );
        assert_eq!(
            NoiseSchedule::from_alphas_cumprod(vec![0.9, 0.0]),
            Err(ScheduleError::InvalidAlphaCumprod {
                index: 1,
                value: 0.0
            })
        );
        assert!(NoiseSchedule::from_alphas_cumprod(vec![0.9, f32::NAN]).is_err());
        let schedule = NoiseSchedule::from_alphas_cumprod(vec![0.9, 0.5]).unwrap();
        assert!(schedule.alpha_cumprod(2).is_err());
    }

    #[test]
    fn clean_latent_formula() {
        let residual = [0.1f32, 0.2, -0.3];
        let mut latent = [0.5f32, -1.0, 2.0];
        clean_latent_in_place(&mut latent, &residual, 0.25).unwrap();
        assert_eq!(latent, [0.9, -2.2, 4.3]);
        let mut latent = [0.5f32, -1.0, 2.0];
        assert_eq!(
            clean_latent_in_place(&mut latent, &residual[..2], 0.25),
            Err(ScheduleError::LengthMismatch {
                latent: 3,
                residual: 2
            })
        );
        assert!(clean_latent_in_place(&mut latent, &residual, 0.0).is_err());
        assert!(clean_latent_in_place(&mut latent, &residual, f32::NAN).is_err());
    }

    /// Compares with a bundle manifest's `alphas_cumprod` when one is around
    /// (`TADSR_BUNDLE` or models/tiny); skipped otherwise.
    #[test]
    fn matches_a_bundle_manifest_when_present() {
        let bundle = std::env::var_os("TADSR_BUNDLE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny")
            });
        let Ok(text) = std::fs::read_to_string(bundle.join("manifest.json")) else {
            eprintln!("no bundle manifest at {}; skipped", bundle.display());
            return;
        };
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
        let Some(values) = manifest["schedule"]["alphas_cumprod"].as_array() else {
            eprintln!("manifest has no schedule.alphas_cumprod; skipped");
            return;
        };
        let ours = NoiseSchedule::sd21();
        assert_eq!(values.len(), ours.num_train_timesteps());
        let worst = values
            .iter()
            .zip(ours.alphas_cumprod())
            .map(|(theirs, &ours)| {
                let theirs = theirs.as_f64().expect("number");
                (f64::from(ours) - theirs).abs() / theirs
            })
            .fold(0.0, f64::max);
        eprintln!("manifest vs f64 schedule: max relative difference {worst:e}");
        assert!(worst < 1e-5, "{worst}");
    }
}

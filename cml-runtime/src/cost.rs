//! What a bootstrap costs on this machine: the cost model the parameter
//! optimizer ranks candidates with, and machine profiles that calibrate it.
//!
//! One keyswitch + bootstrap costs, in nanoseconds,
//!
//! ```text
//! n · (fft · (k+1)(ℓ+1) · N·log2 N  +  product · (k+1)²·ℓ · N)   blind rotation, n steps
//!   + keyswitch · kN · ℓ_ks · (n+1)                                keyswitch
//!   + fixed                                                         accumulator, modulus switch, extraction
//! ```
//!
//! (forward and inverse FFTs of the decomposed accumulator, the Fourier-domain
//! products with the bootstrap key, the keyswitch's multiply-adds). The
//! coefficients depend on the CPU (AVX-512 or not, cache sizes): `cml
//! bench-pbs --calibrate` measures them on the machine it runs on and writes
//! a [`CostProfile`]; [`install`] makes one the process's model
//! ([`CostModel::BUILTIN`] otherwise). Two models are built in, one per
//! kind of CPU `tfhe`'s FFT distinguishes ([`Builtin`]): with AVX-512 and
//! without. The choice only ranks parameter sets
//! that all meet the same failure target at 128-bit security: a profile
//! changes speed, never correctness or security.
//!
//! ```
//! use cml_runtime::cost::{CostModel, CostProfile};
//!
//! let model = CostModel::BUILTIN;
//! // tfhe's 4-bit set: n = 879, k = 1, N = 2048, one level; keyswitch 2048 → 879, 3 levels.
//! let ms = model.pbs_ms(879, 1, 2048, 1) + model.keyswitch_ms(2048, 879, 3);
//! assert!(ms > 10.0 && ms < 30.0);
//!
//! // A profile round-trips through its JSON form; a foreign one is refused.
//! let profile = CostProfile::new("Example CPU", false, model);
//! let json = profile.to_json();
//! assert_eq!(CostProfile::from_json(&json).unwrap(), profile);
//! assert!(CostProfile::from_json("{\"format\": \"other/v9\"}").is_err());
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The format tag of a profile file.
pub const PROFILE_FORMAT: &str = "cml-cost-profile/v1";

/// The `tfhe` version whose primitives a profile measures.
pub const TFHE_VERSION: &str = "1.8";

/// Environment variable naming a profile file.
pub const PROFILE_ENV: &str = "CML_COST_PROFILE";

/// Cost coefficients, in nanoseconds per unit of work (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// Per `(k+1)(ℓ+1)·N·log2 N` of one blind-rotation step (the FFTs).
    pub fft: f64,
    /// Per `(k+1)²·ℓ·N` of one blind-rotation step (Fourier products).
    pub product: f64,
    /// Per `n_in · ℓ · (n_out + 1)` of a keyswitch.
    pub keyswitch: f64,
    /// Per bootstrap, whatever its size (accumulator, modulus switch,
    /// sample extraction).
    pub fixed: f64,
}

impl CostModel {
    /// The built-in model: one coefficient for every term, calibrated on
    /// `tfhe`'s 4-bit set on a 2-vCPU Intel Xeon with AVX-512 (about 20 ms
    /// per bootstrap on one core).
    pub const BUILTIN: CostModel = CostModel {
        fft: 20.0e6 / 95.0e6,
        product: 20.0e6 / 95.0e6,
        keyswitch: 20.0e6 / 95.0e6,
        fixed: 0.0,
    };

    /// The built-in model for CPUs without AVX-512: `cml bench-pbs
    /// --calibrate` on a 2-vCPU AMD EPYC (Zen 3, AVX2), 2026-12-08. There
    /// the keyswitch, reading its key from memory, costs 2.7 times the
    /// AVX-512 model's per unit, and every bootstrap a fixed 2.2 ms.
    pub const BUILTIN_AVX2: CostModel = CostModel {
        fft: 0.204,
        product: 0.505,
        keyswitch: 0.562,
        fixed: 2.233e6,
    };

    /// Blind rotation of `n` steps with GLWE dimension `k`, polynomial size
    /// `big_n` and `level` decomposition levels (plus the fixed part), in ms.
    pub fn pbs_ms(&self, n: usize, k: usize, big_n: usize, level: u32) -> f64 {
        let (fft, product) = rotation_units(k, big_n, level);
        (n as f64 * (self.fft * fft + self.product * product) + self.fixed) / 1e6
    }

    /// Keyswitch from dimension `n_in` to `n_out` with `level` levels, in ms.
    pub fn keyswitch_ms(&self, n_in: usize, n_out: usize, level: u32) -> f64 {
        self.keyswitch * keyswitch_units(n_in, n_out, level) / 1e6
    }

    /// Checks that every coefficient is a finite, non-negative number and
    /// that a bootstrap costs something.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let fields = [
            ("fft", self.fft),
            ("product", self.product),
            ("keyswitch", self.keyswitch),
            ("fixed", self.fixed),
        ];
        for (name, v) in fields {
            if !v.is_finite() || v < 0.0 {
                return Err(ProfileError::Invalid(format!(
                    "coefficient `{name}` is {v}, not a finite non-negative number"
                )));
            }
        }
        if self.fft + self.product <= 0.0 || self.keyswitch <= 0.0 {
            return Err(ProfileError::Invalid(
                "a blind rotation or a keyswitch would cost nothing".into(),
            ));
        }
        Ok(())
    }
}

/// `(fft, product)` work units of one blind-rotation step.
pub fn rotation_units(k: usize, big_n: usize, level: u32) -> (f64, f64) {
    let (kf, nf, lf) = ((k + 1) as f64, big_n as f64, f64::from(level));
    (kf * (lf + 1.0) * nf * nf.log2(), kf * kf * lf * nf)
}

/// Work units of one keyswitch.
pub fn keyswitch_units(n_in: usize, n_out: usize, level: u32) -> f64 {
    n_in as f64 * f64::from(level) * (n_out + 1) as f64
}

/// One estimate checked against a measurement when the profile was made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProfileCheck {
    /// Table input bits.
    pub bits: u32,
    /// The model's estimate for the parameters chosen with it, ms.
    pub estimated_ms: f64,
    /// The fastest of the measured lookups, ms.
    pub measured_ms: f64,
}

/// A cost model measured on one machine, as saved by `cml bench-pbs
/// --calibrate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostProfile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// The CPU it was measured on (`/proc/cpuinfo`'s model name).
    pub cpu: String,
    /// Whether that CPU has AVX-512 (which `tfhe`'s FFT uses).
    pub avx512: bool,
    /// The `tfhe` version measured ([`TFHE_VERSION`]).
    pub tfhe: String,
    /// The fitted coefficients.
    pub model: CostModel,
    /// Estimated against measured single lookups, per precision.
    #[serde(default)]
    pub checks: Vec<ProfileCheck>,
}

impl CostProfile {
    /// A profile of `model` for this format and `tfhe` version.
    pub fn new(cpu: &str, avx512: bool, model: CostModel) -> Self {
        Self {
            format: PROFILE_FORMAT.into(),
            cpu: cpu.into(),
            avx512,
            tfhe: TFHE_VERSION.into(),
            model,
            checks: Vec::new(),
        }
    }

    /// The profile as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile always serializes")
    }

    /// Reads a profile, refusing another format, another `tfhe` version or
    /// coefficients that are not costs.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        // The format first, so that a foreign file says what it is.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ProfileError::Parse(e.to_string()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(PROFILE_FORMAT) => {}
            Some(other) => {
                return Err(ProfileError::Foreign(format!(
                    "format `{other}`, expected `{PROFILE_FORMAT}`"
                )))
            }
            None => {
                return Err(ProfileError::Foreign(format!(
                    "no `format` field (expected `{PROFILE_FORMAT}`)"
                )))
            }
        }
        let profile: CostProfile =
            serde_json::from_value(value).map_err(|e| ProfileError::Parse(e.to_string()))?;
        if profile.tfhe != TFHE_VERSION {
            return Err(ProfileError::Foreign(format!(
                "measured with tfhe {}, this build uses {TFHE_VERSION}",
                profile.tfhe
            )));
        }
        profile.model.validate()?;
        Ok(profile)
    }

    /// Reads a profile file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Io(e.to_string()))?;
        Self::from_json(&text)
    }
}

/// Why a profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Io(String),
    /// Not JSON, or not a profile's fields.
    #[error("not a cost profile: {0}")]
    Parse(String),
    /// Another format or `tfhe` version.
    #[error("a foreign profile: {0}")]
    Foreign(String),
    /// Coefficients that are not costs.
    #[error("invalid coefficients: {0}")]
    Invalid(String),
}

/// The built-in cost models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// [`CostModel::BUILTIN`], measured on an Intel Xeon with AVX-512.
    Avx512,
    /// [`CostModel::BUILTIN_AVX2`], measured on an AMD EPYC (Zen 3) without
    /// AVX-512.
    Avx2,
}

impl Builtin {
    /// The built-in model of the CPU this runs on: [`Builtin::Avx512`] when
    /// it has AVX-512F (which `tfhe`'s FFT then uses), else
    /// [`Builtin::Avx2`].
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Builtin::Avx512;
        }
        Builtin::Avx2
    }

    /// Its coefficients.
    pub fn model(self) -> CostModel {
        match self {
            Builtin::Avx512 => CostModel::BUILTIN,
            Builtin::Avx2 => CostModel::BUILTIN_AVX2,
        }
    }
}

impl std::fmt::Display for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Builtin::Avx512 => "built-in (calibrated on an AVX-512 Xeon)",
            Builtin::Avx2 => "built-in for CPUs without AVX-512 (calibrated on a Zen 3 EPYC)",
        })
    }
}

/// Where the process's cost model came from.
#[derive(Debug, Clone, PartialEq)]
pub enum CostSource {
    /// A built-in model; `refused` says which profile was refused, and why.
    Builtin {
        /// Which one.
        model: Builtin,
        /// A profile that was asked for and refused.
        refused: Option<(PathBuf, ProfileError)>,
    },
    /// A profile file.
    Profile {
        /// Its path.
        path: PathBuf,
        /// Its content.
        profile: CostProfile,
    },
}

impl CostSource {
    /// The model this source gives.
    pub fn model(&self) -> CostModel {
        match self {
            CostSource::Builtin { model, .. } => model.model(),
            CostSource::Profile { profile, .. } => profile.model,
        }
    }

    /// Reads the profile at `path` if there is one (else the environment's
    /// [`PROFILE_ENV`]); without one, or when it cannot be used (the reason
    /// is kept), the built-in model of this CPU ([`Builtin::detect`]).
    pub fn resolve(path: Option<&Path>) -> Self {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(PROFILE_ENV).map(PathBuf::from));
        let model = Builtin::detect();
        match path {
            None => CostSource::Builtin {
                model,
                refused: None,
            },
            Some(path) => match CostProfile::load(&path) {
                Ok(profile) => CostSource::Profile { path, profile },
                Err(e) => CostSource::Builtin {
                    model,
                    refused: Some((path, e)),
                },
            },
        }
    }
}

impl std::fmt::Display for CostSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CostSource::Builtin {
                model,
                refused: None,
            } => write!(f, "{model}"),
            CostSource::Builtin {
                model,
                refused: Some((path, e)),
            } => write!(
                f,
                "{model}; the profile {} was refused: {e}",
                path.display()
            ),
            CostSource::Profile { path, profile } => write!(
                f,
                "profile {} ({}, {}AVX-512)",
                path.display(),
                profile.cpu,
                if profile.avx512 { "" } else { "no " }
            ),
        }
    }
}

static ACTIVE: OnceLock<CostSource> = OnceLock::new();

/// Makes `source` the process's cost model. It must come before the first
/// parameter choice (which fixes the model); a second call is refused and
/// returns the source in force.
pub fn install(source: CostSource) -> Result<(), &'static CostSource> {
    ACTIVE.set(source).map_err(|_| active_source())
}

/// The process's cost model source: the one [`install`]ed first, else
/// [`CostModel::BUILTIN`] on every machine — so that the library and
/// `fhe_model!` (which chooses parameters at compile time) choose the same
/// parameters wherever they run. The `cml` tool installs
/// [`CostSource::resolve`], which picks the built-in model of its CPU.
pub fn active_source() -> &'static CostSource {
    ACTIVE.get_or_init(|| CostSource::Builtin {
        model: Builtin::Avx512,
        refused: None,
    })
}

/// The process's cost model.
pub fn active() -> CostModel {
    active_source().model()
}

/// Least squares of `y ≈ x · c` over rows `(x, y)` with three columns and
/// non-negative coefficients: a column whose coefficient would be negative
/// (or that makes the system singular) is dropped and the rest refitted.
pub fn nonnegative_least_squares(rows: &[([f64; 3], f64)]) -> [f64; 3] {
    let mut cols = vec![0usize, 1, 2];
    while !cols.is_empty() {
        let m = cols.len();
        // Normal equations over the kept columns, by Gauss-Jordan elimination.
        let mut a = vec![vec![0.0f64; m + 1]; m];
        for (x, y) in rows {
            for (i, &ci) in cols.iter().enumerate() {
                for (j, &cj) in cols.iter().enumerate() {
                    a[i][j] += x[ci] * x[cj];
                }
                a[i][m] += x[ci] * y;
            }
        }
        let mut singular = false;
        for i in 0..m {
            let p = (i..m)
                .max_by(|&u, &v| a[u][i].abs().total_cmp(&a[v][i].abs()))
                .unwrap_or(i);
            a.swap(i, p);
            if a[i][i].abs() < 1e-300 {
                singular = true;
                break;
            }
            let pivot = a[i].clone();
            for (r, row) in a.iter_mut().enumerate() {
                if r != i {
                    let f = row[i] / pivot[i];
                    for (x, p) in row.iter_mut().zip(&pivot).skip(i) {
                        *x -= f * p;
                    }
                }
            }
        }
        if singular {
            cols.pop();
            continue;
        }
        let x: Vec<f64> = (0..m).map(|i| a[i][m] / a[i][i]).collect();
        // Negative, or NaN from a degenerate system: drop that column.
        match x.iter().position(|v| v.is_nan() || *v < 0.0) {
            Some(i) => {
                cols.remove(i);
            }
            None => {
                let mut out = [0.0; 3];
                for (&c, &v) in cols.iter().zip(&x) {
                    out[c] = v;
                }
                return out;
            }
        }
    }
    [0.0; 3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matches_the_former_single_coefficient_model() {
        // 4-bit set: the estimate the optimizer has always used (~20 ms).
        let m = CostModel::BUILTIN;
        let ms = m.pbs_ms(879, 1, 2048, 1) + m.keyswitch_ms(2048, 879, 3);
        let units = 879.0 * (2.0 * 2.0 * 2048.0 * 11.0 + 4.0 * 2048.0) + 2048.0 * 3.0 * 880.0;
        assert!((ms - units * 20.0 / 95.0e6).abs() < 1e-9, "{ms}");
        assert!(m.validate().is_ok());
        // The model for CPUs without AVX-512 is a valid one, and says so.
        assert!(CostModel::BUILTIN_AVX2.validate().is_ok());
        assert_eq!(Builtin::Avx2.model(), CostModel::BUILTIN_AVX2);
        assert!(Builtin::Avx2.to_string().contains("without AVX-512"));
        // The library's default does not depend on the CPU.
        assert_eq!(active(), CostModel::BUILTIN);
    }

    #[test]
    fn foreign_corrupt_and_invalid_profiles_are_refused() {
        let good = CostProfile::new("CPU", true, CostModel::BUILTIN);
        let json = good.to_json();
        assert_eq!(CostProfile::from_json(&json), Ok(good.clone()));

        let err = |text: &str| CostProfile::from_json(text).unwrap_err().to_string();
        assert!(err("{not json").starts_with("not a cost profile"));
        assert!(err("[]").contains("no `format` field"));
        assert!(err(&json.replace(PROFILE_FORMAT, "cml-cost-profile/v2"))
            .contains("format `cml-cost-profile/v2`"));
        let mut other = good.clone();
        other.tfhe = "0.9".into();
        assert!(err(&other.to_json()).contains("measured with tfhe 0.9"));
        let mut negative = good.clone();
        negative.model.keyswitch = -1.0;
        assert!(err(&negative.to_json()).contains("coefficient `keyswitch` is -1"));
        assert!(err(&json.replace("\"cpu\"", "\"processor\"")).starts_with("not a cost profile"));
        let truncated = &json[..json.len() / 2];
        assert!(err(truncated).starts_with("not a cost profile"));
    }

    #[test]
    fn a_missing_or_refused_profile_falls_back_to_the_builtin_model() {
        let missing = CostSource::resolve(Some(Path::new("/no/such/profile.json")));
        assert_eq!(missing.model(), Builtin::detect().model());
        let text = missing.to_string();
        assert!(
            text.contains("built-in") && text.contains("/no/such/profile.json was refused"),
            "{text}"
        );

        let dir = std::env::temp_dir().join(format!("cml-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.json");
        let mut profile = CostProfile::new("Test CPU", false, CostModel::BUILTIN);
        profile.model.fft *= 2.0;
        std::fs::write(&path, profile.to_json()).unwrap();
        let found = CostSource::resolve(Some(&path));
        assert_eq!(found.model(), profile.model);
        assert!(found.to_string().contains("(Test CPU, no AVX-512)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fit_recovers_known_coefficients() {
        let rows: Vec<([f64; 3], f64)> = [(1.0, 2.0), (3.0, 1.0), (2.0, 5.0), (7.0, 3.0)]
            .iter()
            .map(|&(x1, x2)| ([x1, x2, 1.0], 2.0 * x1 + 0.5 * x2 + 4.0))
            .collect();
        let [a, b, c] = nonnegative_least_squares(&rows);
        assert!((a - 2.0).abs() < 1e-9 && (b - 0.5).abs() < 1e-9 && (c - 4.0).abs() < 1e-9);
        // A negative intercept is dropped, not returned.
        let rows: Vec<([f64; 3], f64)> = [(1.0, 2.0), (3.0, 1.0), (2.0, 5.0)]
            .iter()
            .map(|&(x1, x2)| ([x1, x2, 1.0], 2.0 * x1 + 0.5 * x2 - 1.0))
            .collect();
        let [a, b, c] = nonnegative_least_squares(&rows);
        assert!(a >= 0.0 && b >= 0.0 && c == 0.0, "{a} {b} {c}");
        // No rows: nothing to fit.
        assert_eq!(nonnegative_least_squares(&[]), [0.0; 3]);
    }
}

//! # cml-macros
//!
//! `fhe_model!` reads a model spec at compile time — a YAML file or the DSL
//! inline — checks it, quantizes it, builds its integer program, chooses its
//! FHE parameters, and emits a typed Rust API with the program embedded as
//! constants. All of that work is `cml-runtime`'s (built here without
//! `tfhe`); this crate only parses tokens, calls it, and turns its errors into
//! spanned compile errors.
//!
//! ```ignore
//! cml::fhe_model!(pub BreastCancer = "specs/breast_cancer_logreg.yaml");
//!
//! let p = BreastCancer::predict(&[13.0; 30])?;          // clear
//! let (client, server) = BreastCancer::keygen();
//! let ct = BreastCancer::encrypt(&client, &[13.0; 30])?; // client
//! let out = BreastCancer::run(&server, &ct)?;           // server
//! assert_eq!(BreastCancer::decrypt(&client, &out)?, p); // client
//! ```
//!
//! Generated code refers to `::cml_runtime`, so a crate that uses the macro
//! depends on `cml-runtime` (with its default `fhe` feature for the
//! encrypted methods).

mod codegen;
mod input;

use std::path::{Path, PathBuf};

use cml_runtime::data::Dataset;
use cml_runtime::models::{CompileOptions, CompiledModel};
use cml_runtime::spec::{LoadedSpec, ModelSpec};
use cml_runtime::PFail;
use proc_macro2::TokenStream;

use input::{DslText, MacroInput};

/// Generates a typed FHE model from a spec.
///
/// Two forms:
///
/// - `fhe_model!(pub Name = "path/to/spec.yaml");` — the path is relative to
///   the calling crate's `CARGO_MANIFEST_DIR` (absolute paths are refused);
///   editing the file rebuilds the code. Option: `, p_fail = -40` (log2 of
///   the failure probability per bootstrap or decryption).
/// - `fhe_model! { pub model Name { … } }` — the DSL inline (`docs/dsl.md`).
///
/// It emits `struct Name` with constants (feature and output counts, bits,
/// integer weights), typed methods (`predict`, `simulate`, `quantize`,
/// `predict_row`, `keygen`, `encrypt`, `run`, `decrypt`) taking
/// `&[f64; N_FEATURES]`, and a module `name` with `Prediction` (and `Class`
/// for classifiers). A bad spec is a compile error pointing at the DSL token
/// or at the path, with the spec's line and column in the message.
#[proc_macro]
pub fn fhe_model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

/// The expansion, on `proc_macro2` tokens so it can be tested outside a
/// compiler.
pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let parsed: MacroInput = match syn::parse2(input) {
        Ok(p) => p,
        Err(e) => return e.to_compile_error(),
    };
    match compile(&parsed) {
        Ok((model, origin)) => codegen::generate(parsed.vis(), parsed.name(), &model, &origin),
        Err(e) => {
            let mut out = codegen::skeleton(parsed.vis(), parsed.name());
            out.extend(e.to_compile_error());
            out
        }
    }
}

fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Loads, checks and compiles the spec; errors carry the span to blame.
fn compile(input: &MacroInput) -> Result<(CompiledModel, codegen::Origin), syn::Error> {
    match input {
        MacroInput::File { path, p_fail, .. } => {
            let rel = PathBuf::from(path.value());
            if rel.is_absolute() {
                return Err(syn::Error::new(
                    path.span(),
                    "absolute spec paths are not allowed: give a path relative to the crate's Cargo.toml",
                ));
            }
            let full = manifest_dir().join(&rel);
            let mut loaded = ModelSpec::load(&full)
                .map_err(|e| syn::Error::new(path.span(), relative_message(&e.to_string())))?;
            loaded.origin = rel.clone();
            let mut tracked = vec![full.display().to_string()];
            let target = match p_fail {
                Some(x) => PFail::PerOp(*x),
                None => PFail::default(),
            };
            let model = compile_loaded(&loaded, &full, target, &mut tracked)
                .map_err(|m| syn::Error::new(path.span(), format!("{}: {m}", rel.display())))?;
            Ok((
                model,
                codegen::Origin {
                    label: rel.display().to_string(),
                    tracked,
                },
            ))
        }
        MacroInput::Dsl { name, tokens, .. } => {
            let text = DslText::new(tokens.clone());
            let loaded = ModelSpec::load_dsl_str(&text.text, "inline fhe_model!").map_err(|e| {
                let span = e
                    .location()
                    .and_then(|l| text.span_at(l.line, l.column))
                    .unwrap_or_else(|| name.span());
                syn::Error::new(span, dsl_message(&e))
            })?;
            let mut tracked = Vec::new();
            let model = compile_loaded(
                &loaded,
                &manifest_dir().join("inline.cml"),
                PFail::default(),
                &mut tracked,
            )
            .map_err(|m| syn::Error::new(name.span(), m))?;
            Ok((
                model,
                codegen::Origin {
                    label: "inline fhe_model!".into(),
                    tracked,
                },
            ))
        }
    }
}

/// Compiles a loaded spec, calibrating on its training CSV when it has no
/// input ranges. Returns the error text on failure.
fn compile_loaded(
    loaded: &LoadedSpec,
    spec_path: &Path,
    p_fail: PFail,
    tracked: &mut Vec<String>,
) -> Result<CompiledModel, String> {
    let spec = &loaded.spec;
    let calibration = match (&spec.quantization.input_ranges, &spec.data) {
        (None, Some(data)) => match &data.train {
            Some(train) => {
                let path = spec_path.parent().unwrap_or(Path::new(".")).join(train);
                let set = Dataset::from_csv(&path, spec.features()).map_err(|e| e.to_string())?;
                tracked.push(path.display().to_string());
                Some(set)
            }
            None => None,
        },
        _ => None,
    };
    let options = CompileOptions {
        calibration: calibration.as_ref().map(|d| d.features.view()),
        p_fail,
    };
    CompiledModel::compile(spec, &options).map_err(|e| e.to_string())
}

/// Spec errors name the file as given to `load`: show it relative to the
/// manifest directory, as the user wrote it.
fn relative_message(message: &str) -> String {
    let dir = manifest_dir();
    let prefix = format!("{}/", dir.display());
    message.replace(&prefix, "")
}

/// DSL errors already point at the token: drop the synthetic file name and
/// keep the field and the problem.
fn dsl_message(e: &cml_runtime::SpecError) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((_, rest)) if text.starts_with("inline fhe_model!") => rest.to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn pretty(tokens: TokenStream) -> String {
        let file: syn::File = syn::parse2(tokens).expect("the expansion parses as a file");
        prettyplease::unparse(&file)
    }

    const IRIS: &str = "model Iris {
        description: \"a small multinomial model\"
        linear {
            estimator: logistic_regression
            task: classification
            link: softmax
            features: [sepal_length, sepal_width, petal_length, petal_width]
            classes: [setosa, versicolor, virginica]
            coefficients: [[-0.42, 0.97, -2.4, -1.0], [0.53, -0.32, -0.2, -0.94], [-0.11, -0.65, 2.6, 1.94]]
            intercepts: [9.8, 2.2, -12.0]
        }
        quantization { input_ranges: [[4.3, 7.9], [2.0, 4.4], [1.0, 6.9], [0.1, 2.5]] }
    }";

    /// A golden snapshot guards the generated code. Set `CML_BLESS=1` to
    /// rewrite it after an intended change.
    #[test]
    fn expansion_matches_golden_snapshot() {
        let tokens: TokenStream = format!("pub {IRIS}").parse().unwrap();
        let got = pretty(expand(tokens));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/iris_dsl.rs");
        if std::env::var_os("CML_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).expect("golden file (run with CML_BLESS=1 to create)");
        assert_eq!(
            got, want,
            "expansion changed; review and re-bless with CML_BLESS=1"
        );
    }

    #[test]
    fn errors_still_emit_the_skeleton() {
        let out = expand(quote!(pub Broken = "no/such/spec.yaml"));
        let text = out.to_string();
        assert!(text.contains("pub struct Broken"), "{text}");
        assert!(text.contains("compile_error"), "{text}");
        assert!(
            text.contains("no/such/spec.yaml: cannot read spec"),
            "{text}"
        );
    }

    #[test]
    fn absolute_paths_are_refused() {
        let text = expand(quote!(X = "/etc/passwd")).to_string();
        assert!(
            text.contains("absolute spec paths are not allowed"),
            "{text}"
        );
    }

    #[test]
    fn dsl_errors_point_at_the_token() {
        let tokens: TokenStream = IRIS
            .replace("link: softmax", "link: sigmoid")
            .parse()
            .unwrap();
        let text = expand(tokens).to_string();
        assert!(
            text.contains("link `sigmoid` is not valid for 3 classes"),
            "{text}"
        );
    }

    #[test]
    fn class_names_become_variants() {
        let names: Vec<String> = codegen::variant_names(&[
            "malignant".into(),
            "0".into(),
            "not spam".into(),
            "Malignant".into(),
        ])
        .iter()
        .map(|i| i.to_string())
        .collect();
        assert_eq!(names, ["Malignant", "Class0", "NotSpam", "Malignant2"]);
    }
}

/// Expansion time of every bundled spec, printed; a benchmark, not a check.
/// `cargo test --release -p cml-macros -- --ignored --nocapture expansion_time`
#[cfg(test)]
mod bench {
    use super::*;

    #[test]
    #[ignore = "benchmark: run explicitly"]
    fn expansion_time() {
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
        // The macro resolves paths against the calling crate's directory.
        std::env::set_var("CARGO_MANIFEST_DIR", &specs);
        let mut names: Vec<_> = std::fs::read_dir(&specs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        for name in names {
            let tokens: TokenStream = format!("pub Model = {name:?}").parse().unwrap();
            let runs = 20;
            let start = std::time::Instant::now();
            let mut size = 0;
            for _ in 0..runs {
                size = expand(tokens.clone()).to_string().len();
            }
            let per = start.elapsed() / runs;
            println!("{name:40} {per:>10.2?} per expansion, {size} bytes of tokens");
        }
    }
}

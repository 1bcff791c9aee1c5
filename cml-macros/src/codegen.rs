//! Code generation: a compiled model becomes a typed Rust API over
//! `::cml_runtime`, with its integer program embedded as statics.

use cml_runtime::models::CompiledModel;
use cml_runtime::program::Op;
use cml_runtime::quant::Quantizer;
use cml_runtime::spec::{Link, Task};
use cml_runtime::{FheParams, PFail};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

/// What the generated doc comments say about the model's origin.
pub struct Origin {
    /// `specs/x.yaml` or `inline fhe_model!`.
    pub label: String,
    /// Absolute path of the spec file, for rebuild tracking.
    pub tracked: Vec<String>,
}

fn f64_lit(v: f64) -> TokenStream {
    if v.is_finite() {
        let lit = Literal::f64_unsuffixed(v);
        quote!(#lit)
    } else {
        let bits = Literal::u64_suffixed(v.to_bits());
        quote!(::core::primitive::f64::from_bits(#bits))
    }
}

fn usize_lit(v: usize) -> Literal {
    Literal::usize_unsuffixed(v)
}

fn i64_lit(v: i64) -> Literal {
    Literal::i64_unsuffixed(v)
}

fn f64s(values: &[f64]) -> TokenStream {
    let items = values.iter().map(|&v| f64_lit(v));
    quote!(&[#(#items),*])
}

fn task_tokens(task: Task) -> TokenStream {
    match task {
        Task::Classification => quote!(::cml_runtime::spec::Task::Classification),
        Task::Regression => quote!(::cml_runtime::spec::Task::Regression),
    }
}

fn link_tokens(link: Link) -> TokenStream {
    match link {
        Link::Identity => quote!(::cml_runtime::spec::Link::Identity),
        Link::Sigmoid => quote!(::cml_runtime::spec::Link::Sigmoid),
        Link::Softmax => quote!(::cml_runtime::spec::Link::Softmax),
        Link::Exp => quote!(::cml_runtime::spec::Link::Exp),
    }
}

fn quantizer_tokens(q: &Quantizer) -> TokenStream {
    let Quantizer {
        n_bits,
        scale,
        zero_point,
        offset,
        narrow,
    } = *q;
    let scale = f64_lit(scale);
    let (n_bits, zero_point, offset) = (
        Literal::u8_unsuffixed(n_bits),
        i64_lit(zero_point),
        i64_lit(offset),
    );
    quote! {
        ::cml_runtime::quant::Quantizer {
            n_bits: #n_bits, scale: #scale, zero_point: #zero_point, offset: #offset, narrow: #narrow,
        }
    }
}

fn params_tokens(p: &FheParams) -> TokenStream {
    let FheParams {
        message_bits,
        input_glwe_dimension,
        input_polynomial_size,
        input_lwe_dimension,
        output_extra_bits,
        pbs,
        light,
        target,
        predicted,
    } = *p;
    let message_bits = Literal::u32_unsuffixed(message_bits);
    let input_glwe_dimension = usize_lit(input_glwe_dimension);
    let input_polynomial_size = usize_lit(input_polynomial_size);
    let input_lwe_dimension = usize_lit(input_lwe_dimension);
    let output_extra_bits = Literal::u32_unsuffixed(output_extra_bits);
    let pbs = match pbs {
        None => quote!(::core::option::Option::None),
        Some(b) => {
            let u32_lit = Literal::u32_unsuffixed;
            let (n, k, big_n, pb, pl, kb, kl) = (
                usize_lit(b.lwe_dimension),
                usize_lit(b.glwe_dimension),
                usize_lit(b.polynomial_size),
                u32_lit(b.pbs_base_log),
                u32_lit(b.pbs_level),
                u32_lit(b.ks_base_log),
                u32_lit(b.ks_level),
            );
            quote! {
                ::core::option::Option::Some(::cml_runtime::params::PbsParams {
                    lwe_dimension: #n, glwe_dimension: #k, polynomial_size: #big_n,
                    pbs_base_log: #pb, pbs_level: #pl, ks_base_log: #kb, ks_level: #kl,
                })
            }
        }
    };
    let light = match light {
        None => quote!(::core::option::Option::None),
        Some(l) => {
            let (b, l) = (
                Literal::u32_unsuffixed(l.base_log),
                Literal::u32_unsuffixed(l.level),
            );
            quote!(::core::option::Option::Some(::cml_runtime::params::LightPbs {
                base_log: #b, level: #l,
            }))
        }
    };
    let target = match target {
        PFail::PerOp(x) => {
            let x = f64_lit(x);
            quote!(::cml_runtime::PFail::PerOp(#x))
        }
        PFail::Global(x) => {
            let x = f64_lit(x);
            quote!(::cml_runtime::PFail::Global(#x))
        }
    };
    let (a, b, c, d) = (
        f64_lit(predicted.log2_p_fail_pbs),
        f64_lit(predicted.log2_p_fail_output),
        f64_lit(predicted.log2_p_fail_program),
        f64_lit(predicted.pbs_ms),
    );
    let (e, f) = (
        usize_lit(predicted.light_pbs),
        f64_lit(predicted.light_pbs_ms),
    );
    quote! {
        ::cml_runtime::FheParams {
            message_bits: #message_bits,
            input_glwe_dimension: #input_glwe_dimension,
            input_polynomial_size: #input_polynomial_size,
            input_lwe_dimension: #input_lwe_dimension,
            output_extra_bits: #output_extra_bits,
            pbs: #pbs,
            light: #light,
            target: #target,
            predicted: ::cml_runtime::params::Predicted {
                log2_p_fail_pbs: #a, log2_p_fail_output: #b, log2_p_fail_program: #c, pbs_ms: #d,
                light_pbs: #e, light_pbs_ms: #f,
            },
        }
    }
}

/// `"malignant"` → `Malignant`, `"0"` → `Class0`; duplicates get a suffix.
pub fn variant_names(classes: &[String]) -> Vec<Ident> {
    let mut seen: Vec<String> = Vec::new();
    classes
        .iter()
        .map(|c| {
            let mut name: String = c
                .split(|ch: char| !ch.is_ascii_alphanumeric())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let mut cs = p.chars();
                    cs.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                        .unwrap_or_default()
                })
                .collect();
            if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
                name = format!("Class{name}");
            }
            if matches!(name.as_str(), "Self" | "Super" | "Crate") {
                name.push('_');
            }
            let mut unique = name.clone();
            let mut k = 2;
            while seen.contains(&unique) {
                unique = format!("{name}{k}");
                k += 1;
            }
            seen.push(unique.clone());
            Ident::new(&unique, Span::call_site())
        })
        .collect()
}

/// The generated code of a compiled model.
pub fn generate(
    vis: &syn::Visibility,
    name: &Ident,
    model: &CompiledModel,
    origin: &Origin,
) -> TokenStream {
    let spec = &model.spec;
    let module = format_ident!("{}", cml_runtime::spec::dsl::snake_case(&name.to_string()));
    let (n_features_count, n_outputs_count) = (model.n_features(), model.program.outputs.len());
    let n_features = usize_lit(n_features_count);
    let n_inputs = usize_lit(model.program.inputs.len());
    let n_outputs = usize_lit(n_outputs_count);
    let spec_name = &spec.name;
    let input_bits = Literal::u8_unsuffixed(spec.quantization.input_bits);
    let weight_bits = Literal::u8_unsuffixed(spec.quantization.weight_bits);
    let max_bits = Literal::u32_unsuffixed(model.analysis.max_bits());
    let pbs_count = usize_lit(model.encoding.pbs_count(&model.program));
    let features = spec.features();
    let family = match cml_runtime::bundle::Family::of(&spec.model) {
        cml_runtime::bundle::Family::Linear => quote!(Linear),
        cml_runtime::bundle::Family::TreeEnsemble => quote!(TreeEnsemble),
        cml_runtime::bundle::Family::Network => quote!(Network),
    };

    // Program image.
    let inputs = model.program.inputs.iter().map(|r| {
        let (lo, hi) = (i64_lit(r.lo), i64_lit(r.hi));
        quote!((#lo, #hi))
    });
    let ops = model.program.ops.iter().map(|op| match op {
        Op::Linear { terms, constant } => {
            let terms = terms.iter().map(|&(v, w)| {
                let (v, w) = (usize_lit(v), i64_lit(w));
                quote!((#v, #w))
            });
            let constant = i64_lit(*constant);
            quote!(::cml_runtime::embed::OpImage::Linear { terms: &[#(#terms),*], constant: #constant })
        }
        Op::Lut { input, table } => {
            let (input, table) = (usize_lit(*input), usize_lit(*table));
            quote!(::cml_runtime::embed::OpImage::Lut { input: #input, table: #table })
        }
        Op::Round { input, bits, exact } => {
            let (input, bits) = (usize_lit(*input), Literal::u32_unsuffixed(*bits));
            quote!(::cml_runtime::embed::OpImage::Round { input: #input, bits: #bits, exact: #exact })
        }
    });
    let tables = model.program.tables.iter().map(|t| {
        let (tname, offset) = (&t.name, i64_lit(t.offset));
        let entries = t.entries.iter().map(|&e| i64_lit(e));
        quote!(::cml_runtime::embed::TableImage { name: #tname, offset: #offset, entries: &[#(#entries),*] })
    });
    let outputs = model.program.outputs.iter().map(|&o| usize_lit(o));
    let exclusive = model.program.exclusive.iter().map(|group| {
        let members = group.iter().map(|&v| usize_lit(v));
        quote!(&[#(#members),*])
    });
    let standardize = match &model.encoder.standardize {
        Some(s) => {
            let (m, sc) = (f64s(&s.mean), f64s(&s.scale));
            quote!(::core::option::Option::Some((#m, #sc)))
        }
        None => quote!(::core::option::Option::None),
    };
    let quantizers = model.encoder.quantizers.iter().map(quantizer_tokens);
    let low_bits = match model.encoder.low_bits {
        Some(b) => {
            let b = Literal::u8_unsuffixed(b);
            quote!(::core::option::Option::Some(#b))
        }
        None => quote!(::core::option::Option::None),
    };
    let missing = model.encoder.missing.iter().map(|&j| usize_lit(j));
    let scales = f64s(&model.decoder.scales);
    let zero_points = model.decoder.zero_points.iter().map(|&z| i64_lit(z));
    let task = task_tokens(model.decoder.task);
    let link = link_tokens(model.decoder.link);
    let params = params_tokens(&model.params);

    // Dense integer weights of the linear outputs, as constants for users.
    let linear_consts = {
        let rows: Vec<_> = model
            .program
            .outputs
            .iter()
            .filter_map(
                |&o| match model.program.ops.get(o.checked_sub(n_features_count)?) {
                    Some(Op::Linear { terms, constant }) => {
                        let mut dense = vec![0i64; n_features_count];
                        for &(v, w) in terms {
                            if v < n_features_count {
                                dense[v] += w;
                            }
                        }
                        Some((dense, *constant))
                    }
                    _ => None,
                },
            )
            .collect();
        if spec.linear().is_some() && rows.len() == n_outputs_count {
            let weights = rows.iter().map(|(d, _)| {
                let d = d.iter().map(|&w| i64_lit(w));
                quote!([#(#d),*])
            });
            let constants = rows.iter().map(|(_, c)| i64_lit(*c));
            quote! {
                /// Integer weights of each output's dot product (one row per output).
                pub const WEIGHTS: [[i64; #n_features]; #n_outputs] = [#(#weights),*];
                /// Integer constant of each output's dot product.
                pub const CONSTANTS: [i64; #n_outputs] = [#(#constants),*];
            }
        } else {
            quote!()
        }
    };

    // Typed outputs.
    let (types, convert) = match spec.task() {
        Task::Classification => {
            let classes = spec.classes().unwrap_or_default();
            let n_classes = usize_lit(classes.len());
            let variants = variant_names(classes);
            let docs = classes.iter().map(|c| format!("Class `{c}`."));
            let indices = (0..classes.len()).map(usize_lit);
            let probs = if matches!(model.decoder.link, Link::Sigmoid | Link::Softmax) {
                quote!(p.probabilities.as_deref().map(::cml_runtime::embed::to_array::<#n_classes>))
            } else {
                quote!(::core::option::Option::None)
            };
            let types = quote! {
                /// The classes of the model, in the spec's order.
                #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
                pub enum Class {
                    #( #[doc = #docs] #variants ),*
                }

                impl Class {
                    /// Every class, in index order.
                    pub const ALL: [Class; #n_classes] = [#(Class::#variants),*];
                    /// The class names as the spec gives them.
                    pub const NAMES: [&'static str; #n_classes] = [#(#classes),*];

                    /// The class's index in the spec.
                    pub fn index(self) -> usize {
                        match self { #(Class::#variants => #indices),* }
                    }

                    /// The class's name in the spec.
                    pub fn name(self) -> &'static str {
                        Self::NAMES[self.index()]
                    }

                    /// The class of an index, if there is one.
                    pub fn from_index(index: usize) -> ::core::option::Option<Class> {
                        Self::ALL.get(index).copied()
                    }
                }

                /// A prediction of the model.
                #[derive(Debug, Clone, PartialEq)]
                pub struct Prediction {
                    /// The predicted class.
                    pub class: Class,
                    /// Raw scores (decision function) before the link.
                    pub scores: [f64; #n_outputs],
                    /// Class probabilities, for probabilistic classifiers.
                    pub probabilities: ::core::option::Option<[f64; #n_classes]>,
                }
            };
            let convert = quote! {
                Prediction {
                    class: p.class().and_then(Class::from_index).unwrap_or(Class::ALL[0]),
                    scores: ::cml_runtime::embed::to_array::<#n_outputs>(&p.scores),
                    probabilities: #probs,
                }
            };
            (types, convert)
        }
        Task::Regression => (
            quote! {
                /// A prediction of the model.
                #[derive(Debug, Clone, Copy, PartialEq)]
                pub struct Prediction {
                    /// The predicted value (after the inverse link).
                    pub value: f64,
                    /// The linear predictor before the link.
                    pub score: f64,
                }
            },
            quote! {
                Prediction { value: p.value(), score: p.scores.first().copied().unwrap_or(0.0) }
            },
        ),
    };

    let label = &origin.label;
    let weights_doc = match spec.ensemble() {
        Some(e) => format!(
            "{} tree(s), {}-bit leaves",
            e.trees.len(),
            spec.quantization.leaf_bits
        ),
        None => format!("{weight_bits}-bit weights"),
    };
    let struct_doc = format!(
        "FHE model `{spec_name}`, generated by `fhe_model!` from `{label}`.\n\n\
         {n_features_count} features, {n_outputs_count} output(s); {input_bits}-bit inputs, {weights_doc}; \
         widest value {max_bits} bits; {pbs_count} PBS per prediction. Types of its outputs are in [`{module}`]."
    );
    let module_doc =
        format!("Output types and the embedded program of [`{name}`] (from `{label}`).");
    let tracked = origin.tracked.iter().map(|p| {
        quote!(
            const _: &[u8] = ::core::include_bytes!(#p);
        )
    });

    quote! {
        #[doc = #struct_doc]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        #[doc = #module_doc]
        #vis mod #module {
            #types

            #[doc(hidden)]
            pub fn __typed(p: ::cml_runtime::Prediction) -> Prediction {
                #convert
            }

            /// The compiled model, as constants.
            pub static IMAGE: ::cml_runtime::embed::ModelImage = ::cml_runtime::embed::ModelImage {
                name: #spec_name,
                program: ::cml_runtime::embed::ProgramImage {
                    inputs: &[#(#inputs),*],
                    ops: &[#(#ops),*],
                    tables: &[#(#tables),*],
                    outputs: &[#(#outputs),*],
                    exclusive: &[#(#exclusive),*],
                },
                standardize: #standardize,
                quantizers: &[#(#quantizers),*],
                low_bits: #low_bits,
                missing: &[#(#missing),*],
                scales: #scales,
                zero_points: &[#(#zero_points),*],
                task: #task,
                link: #link,
                params: #params,
            };

            /// The runtime form of [`IMAGE`], built on first use.
            pub fn runtime() -> &'static ::cml_runtime::embed::Runtime {
                static RUNTIME: ::std::sync::OnceLock<::cml_runtime::embed::Runtime> =
                    ::std::sync::OnceLock::new();
                RUNTIME.get_or_init(|| ::cml_runtime::embed::Runtime::new(&IMAGE))
            }
        }

        #(#tracked)*

        impl #name {
            /// The spec's model name.
            pub const NAME: &'static str = #spec_name;
            /// Number of input features.
            pub const N_FEATURES: usize = #n_features;
            /// Number of encrypted program inputs.
            pub const N_INPUTS: usize = #n_inputs;
            /// Number of outputs (scores).
            pub const N_OUTPUTS: usize = #n_outputs;
            /// Bits per quantized input.
            pub const INPUT_BITS: u8 = #input_bits;
            /// Bits per quantized weight.
            pub const WEIGHT_BITS: u8 = #weight_bits;
            /// Width of the widest value of the integer program.
            pub const MAX_BITS: u32 = #max_bits;
            /// Programmable bootstraps per prediction.
            pub const PBS_COUNT: usize = #pbs_count;
            /// Feature names, in input order.
            pub const FEATURES: [&'static str; #n_features] = [#(#features),*];
            #linear_consts

            /// The FHE parameters chosen at compile time.
            pub fn params() -> &'static ::cml_runtime::FheParams {
                &#module::IMAGE.params
            }

            /// The integer program every mode runs.
            pub fn program() -> &'static ::cml_runtime::program::Program {
                &#module::runtime().program
            }

            /// The model's deployment bundles, as `cml deploy` makes them
            /// from the same spec (the same model hash).
            pub fn bundle() -> ::cml_runtime::bundle::ServerBundle {
                let features: ::std::vec::Vec<::std::string::String> =
                    Self::FEATURES.iter().map(|f| ::std::string::ToString::to_string(f)).collect();
                #module::runtime().bundle(::cml_runtime::bundle::Identity {
                    name: #spec_name,
                    family: ::cml_runtime::bundle::Family::#family,
                    features: &features,
                })
            }

            /// Writes the client and server bundles into `dir`
            /// (`client/client.json`, `server/server.json`), for
            /// [`cml_runtime::bundle::Client::load`] and
            /// [`cml_runtime::bundle::Server::load`].
            pub fn write_bundles(dir: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), ::cml_runtime::bundle::BundleError> {
                ::cml_runtime::bundle::write(&Self::bundle(), dir)
            }

            /// Quantizes one sample into the program's integer inputs
            /// (`N_INPUTS`: one per feature, or two digits per feature for
            /// tree ensembles).
            pub fn quantize(x: &[f64; #n_features]) -> ::core::result::Result<[i64; #n_inputs], ::cml_runtime::DataError> {
                let q = #module::runtime().quantize(x)?;
                let mut out = [0i64; #n_inputs];
                out.copy_from_slice(&q);
                ::core::result::Result::Ok(out)
            }

            /// Predicts one sample in clear (exact integers).
            pub fn predict(x: &[f64; #n_features]) -> ::core::result::Result<#module::Prediction, ::cml_runtime::Error> {
                #module::runtime().predict(x).map(#module::__typed)
            }

            /// Predicts one sample by simulation (the same integers, no cryptography).
            pub fn simulate(x: &[f64; #n_features]) -> ::core::result::Result<#module::Prediction, ::cml_runtime::Error> {
                #module::runtime().simulate(x).map(#module::__typed)
            }

            /// Predicts one row of `N_FEATURES` columns in clear.
            pub fn predict_row(row: ::cml_runtime::ndarray::ArrayView1<'_, f64>) -> ::core::result::Result<#module::Prediction, ::cml_runtime::Error> {
                let x = Self::row(row)?;
                Self::predict(&x)
            }

            /// Predicts every row of `x` (`N_FEATURES` columns) in clear.
            pub fn predict_rows(x: ::cml_runtime::ndarray::ArrayView2<'_, f64>) -> ::core::result::Result<::std::vec::Vec<#module::Prediction>, ::cml_runtime::Error> {
                x.rows().into_iter().map(Self::predict_row).collect()
            }

            /// A row as a fixed-size array, checking its length.
            pub fn row(row: ::cml_runtime::ndarray::ArrayView1<'_, f64>) -> ::core::result::Result<[f64; #n_features], ::cml_runtime::DataError> {
                if row.len() != #n_features {
                    return ::core::result::Result::Err(::cml_runtime::DataError::Shape { expected: #n_features, found: row.len() });
                }
                let mut x = [0.0f64; #n_features];
                for (o, v) in x.iter_mut().zip(row.iter()) {
                    *o = *v;
                }
                ::core::result::Result::Ok(x)
            }
        }

        ::cml_runtime::__fhe! {
            impl #name {
                /// Generates a client key (secret, stays with the client) and
                /// its evaluation keys (public, for the server).
                pub fn keygen() -> (::cml_runtime::backend::tfhe::ClientKey, ::cml_runtime::backend::tfhe::EvaluationKeys) {
                    #module::runtime().keygen()
                }

                /// Client: quantizes and encrypts one sample.
                pub fn encrypt(client: &::cml_runtime::backend::tfhe::ClientKey, x: &[f64; #n_features]) -> ::core::result::Result<::cml_runtime::backend::tfhe::EncryptedInput, ::cml_runtime::Error> {
                    #module::runtime().encrypt(client, x)
                }

                /// Server: runs the model on ciphertexts with evaluation keys only.
                pub fn run(keys: &::cml_runtime::backend::tfhe::EvaluationKeys, input: &::cml_runtime::backend::tfhe::EncryptedInput) -> ::core::result::Result<::cml_runtime::backend::tfhe::EncryptedOutput, ::cml_runtime::FheError> {
                    #module::runtime().run(keys, input)
                }

                /// Client: decrypts and decodes the server's output.
                pub fn decrypt(client: &::cml_runtime::backend::tfhe::ClientKey, output: &::cml_runtime::backend::tfhe::EncryptedOutput) -> ::core::result::Result<#module::Prediction, ::cml_runtime::Error> {
                    #module::runtime().decrypt(client, output).map(#module::__typed)
                }
            }
        }
    }
}

/// What is emitted after an error: the type with permissive methods, so that
/// user code gets the one real error, not a cascade. It never builds (the
/// error is emitted with it), so the bodies are never run.
pub fn skeleton(vis: &syn::Visibility, name: &Ident) -> TokenStream {
    let module = format_ident!("{}", cml_runtime::spec::dsl::snake_case(&name.to_string()));
    quote! {
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        #[allow(dead_code)]
        #vis mod #module {
            /// Unavailable: the model did not compile.
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
            pub enum Class {}
            /// Unavailable: the model did not compile.
            #[derive(Debug, Clone, PartialEq)]
            pub struct Prediction;
        }

        #[allow(dead_code, unused_variables)]
        impl #name {
            pub const N_FEATURES: usize = 0;
            pub const N_OUTPUTS: usize = 0;
            pub fn predict<T>(x: T) -> ::core::result::Result<#module::Prediction, ::cml_runtime::Error> {
                ::core::unreachable!("fhe_model! reported an error for this model")
            }
            pub fn simulate<T>(x: T) -> ::core::result::Result<#module::Prediction, ::cml_runtime::Error> {
                ::core::unreachable!("fhe_model! reported an error for this model")
            }
            pub fn quantize<T>(x: T) -> ::core::result::Result<::std::vec::Vec<i64>, ::cml_runtime::DataError> {
                ::core::unreachable!("fhe_model! reported an error for this model")
            }
        }
    }
}

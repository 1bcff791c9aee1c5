use cml_macros::fhe_model;

// A per-tensor quantizer takes one range, not one per feature.
fhe_model! {
    pub model Tiny {
        linear {
            estimator: logistic_regression
            task: classification
            link: sigmoid
            features: [a, b, c]
            classes: [no, yes]
            coefficients: [[0.5, -1.0, 2.0]]
            intercepts: [0.25]
        }
        quantization { input_granularity: tensor, input_ranges: [[0.0, 1.0], [-1.0, 1.0], [0.0, 10.0]] }
    }
}

fn main() {}

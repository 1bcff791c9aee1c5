use cml_macros::fhe_model;

// A classifier without classes.
fhe_model! {
    pub model Tiny {
        linear {
            estimator: logistic_regression
            task: classification
            link: sigmoid
            features: [a, b, c]
            coefficients: [[0.5, -1.0, 2.0]]
            intercepts: [0.25]
        }
        quantization { input_ranges: [[0.0, 1.0], [-1.0, 1.0], [0.0, 10.0]] }
    }
}

fn main() {}

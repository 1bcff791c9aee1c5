use cml_macros::fhe_model;

fhe_model! {
    model Tiny {
        linear {
            estimator: logistic_regression
            task: classification
            link: sigmoid
            features: [a, b, c]
            classes: [no, yes]
            coefficients: [[0.5, -1.0, 2.0]]
            intercepts: [0.25]
        }
        quantization { input_ranges: [[0.0, 1.0], [-1.0, 1.0], [0.0, 10.0]] }
    }
}

fn main() {
    let p = Tiny::predict(&[0.0, 1.0, 0.0]).unwrap();
    assert_eq!(p.class, tiny::Class::No);
    let probabilities = p.probabilities.unwrap();
    assert!(probabilities[0] > 0.5);
    assert_eq!(Tiny::WEIGHTS[0].len(), 3);
}

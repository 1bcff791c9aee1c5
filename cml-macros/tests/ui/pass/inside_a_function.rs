use cml_macros::fhe_model;

fn main() {
    fhe_model! {
        model Local {
            linear {
                estimator: ridge
                task: regression
                link: identity
                features: [x]
                coefficients: [[2.0]]
                intercepts: [1.0]
            }
            quantization { input_ranges: [[0, 10]] }
        }
    }
    let p = Local::predict(&[3.0]).unwrap();
    assert!((p.value - 7.0).abs() < 0.1, "{}", p.value);
}

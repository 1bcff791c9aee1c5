use cml_macros::fhe_model;

fhe_model!(pub Tiny = "../../../../cml-macros/tests/ui/specs/tiny.yaml");

fn main() {
    let p: tiny::Prediction = Tiny::predict(&[1.0, 0.0, 5.0]).unwrap();
    assert_eq!(p.class, tiny::Class::Yes);
    assert_eq!(p.class.name(), "yes");
    assert_eq!(Tiny::simulate(&[1.0, 0.0, 5.0]).unwrap(), p);
    assert_eq!(Tiny::N_FEATURES, 3);
    assert_eq!(Tiny::PBS_COUNT, 0);
    let row = cml_runtime::ndarray::array![1.0, 0.0, 5.0];
    assert_eq!(Tiny::predict_row(row.view()).unwrap(), p);
}

use cml_macros::fhe_model;

fhe_model!(pub Tiny = "../../../../cml-macros/tests/ui/specs/tiny.yaml");

fn main() {
    // Three features are declared; two are passed.
    let _ = Tiny::predict(&[1.0, 2.0]);
}

use cml_macros::fhe_model;

fhe_model!(pub Tiny = "../../../../cml-macros/tests/ui/specs/tiny.yaml", security = 80);

fn main() {}

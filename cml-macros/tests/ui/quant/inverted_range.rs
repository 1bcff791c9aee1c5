use cml_macros::fhe_model;

fhe_model!(pub Inverted = "../../../../cml-macros/tests/ui/specs/inverted_range.yaml");

fn main() {}

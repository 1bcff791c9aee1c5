use cml_macros::fhe_model;

fhe_model!(pub NotAString = specs::tiny);

fn main() {}

use cml_macros::fhe_model;

fhe_model!(pub Absolute = "/etc/model.yaml");

fn main() {}

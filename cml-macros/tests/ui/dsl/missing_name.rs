use cml_macros::fhe_model;

// `model` needs a name.
fhe_model! { model { linear { } } }

fn main() {}
